/// gRPC's canonical status codes (grpc `doc/statuscodes.md`), carried in the `grpc-status` trailer.
public enum RPCStatusCode: Int, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    public var description: String {
        switch self {
        case .ok: return "OK"
        case .cancelled: return "CANCELLED"
        case .unknown: return "UNKNOWN"
        case .invalidArgument: return "INVALID_ARGUMENT"
        case .deadlineExceeded: return "DEADLINE_EXCEEDED"
        case .notFound: return "NOT_FOUND"
        case .alreadyExists: return "ALREADY_EXISTS"
        case .permissionDenied: return "PERMISSION_DENIED"
        case .resourceExhausted: return "RESOURCE_EXHAUSTED"
        case .failedPrecondition: return "FAILED_PRECONDITION"
        case .aborted: return "ABORTED"
        case .outOfRange: return "OUT_OF_RANGE"
        case .unimplemented: return "UNIMPLEMENTED"
        case .internal: return "INTERNAL"
        case .unavailable: return "UNAVAILABLE"
        case .dataLoss: return "DATA_LOSS"
        case .unauthenticated: return "UNAUTHENTICATED"
        }
    }

    /// The code a `grpc-status` value names; anything unparseable or out of range is UNKNOWN, as the
    /// gRPC spec asks of clients.
    public init(grpcStatus value: String?) {
        guard let value, let n = Int(value), let code = RPCStatusCode(rawValue: n) else {
            self = .unknown
            return
        }
        self = code
    }

    /// The status a client reports for a response that ended with HTTP status `http` and no
    /// `grpc-status` (gRPC `doc/http-grpc-status-mapping.md`).
    public init(httpStatus http: Int) {
        switch http {
        case 400: self = .internal
        case 401: self = .unauthenticated
        case 403: self = .permissionDenied
        case 404: self = .unimplemented
        case 429, 502, 503, 504: self = .unavailable
        default: self = .unknown
        }
    }
}

/// The one error type of Kiln's RPC layer: a status code, a message for people, and the cause when
/// another error was turned into this one.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public var code: RPCStatusCode
    public var message: String
    /// The error this one stands for, if any (kept for logs; never sent to the peer).
    public var cause: (any Error)?

    public init(_ code: RPCStatusCode, _ message: String = "", cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// Any error as an RPC error: an `RPCError` as it is, a protobuf decoding error as INTERNAL, task
    /// cancellation as CANCELLED, anything else
    /// as UNKNOWN with the cause kept.
    public init(wrapping error: any Error) {
        if let e = error as? RPCError {
            self = e
        } else if let e = error as? ProtobufError {
            // A message that does not parse is the peer's fault, reported as gRPC implementations do.
            self.init(.internal, "invalid message: \(e)", cause: error)
        } else if error is CancellationError {
            self.init(.cancelled, "cancelled", cause: error)
        } else {
            self.init(.unknown, String(describing: error), cause: error)
        }
    }

    public var description: String {
        message.isEmpty ? code.description : "\(code): \(message)"
    }
}
