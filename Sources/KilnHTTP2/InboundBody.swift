import DequeModule
import Synchronization

/// Bytes arriving from the peer on one stream (a request body on the server, a response body on the
/// client), read as an async sequence of chunks.
///
/// HTTP/2 flow control follows the reader: the connection tells the peer it may send more only as chunks
/// are taken out here, so a handler that stops reading stops the peer after one window.
public final class HTTP2InboundBody: AsyncSequence, Sendable {
    public typealias Element = [UInt8]

    private struct State {
        var chunks = Deque<[UInt8]>()
        var finished = false
        var error: HTTP2Error?
        var trailers = HTTP2Headers()
        var waiter: CheckedContinuation<[UInt8]?, Error>?
        var consumedSinceReport = 0
        var reportScheduled = false
        /// The reader releases bytes itself (`releaseBytes`) instead of as it takes them.
        var holdsBytes = false
    }

    private let state = Mutex(State())
    /// Called (from any thread) when there are consumed bytes to report; the callee must come back
    /// through ``takeConsumedBytes()`` on its loop.
    private let reportConsumed: @Sendable () -> Void

    /// What the body's bytes hold against the connection's request buffer budget (server side).
    private let charge: BodyCharge?

    init(charge: BodyCharge? = nil, reportConsumed: @escaping @Sendable () -> Void) {
        self.charge = charge
        self.reportConsumed = reportConsumed
    }

    // MARK: Loop side

    func append(_ chunk: [UInt8]) {
        let (waiter, release) = state.withLock { s -> (CheckedContinuation<[UInt8]?, Error>?, Bool) in
            if let w = s.waiter {
                s.waiter = nil
                s.consumedSinceReport += chunk.count
                return (w, !s.holdsBytes)
            }
            s.chunks.append(chunk)
            return (nil, false)
        }
        if let waiter {
            if release { charge?.release(chunk.count) }
            scheduleReportIfNeeded()
            waiter.resume(returning: chunk)
        }
    }

    func finish(trailers: HTTP2Headers? = nil, error: HTTP2Error? = nil) {
        let waiter = state.withLock { s -> CheckedContinuation<[UInt8]?, Error>? in
            guard !s.finished else { return nil }
            s.finished = true
            s.error = error
            if let trailers { s.trailers = trailers }
            // Buffered chunks stay readable after a clean end; an error discards them.
            if error != nil { s.chunks.removeAll() }
            let w = s.waiter
            s.waiter = nil
            return w
        }
        if let waiter {
            if let error { waiter.resume(throwing: error) } else { waiter.resume(returning: nil) }
        }
    }

    /// The bytes the reader has taken since the last call. Loop side.
    func takeConsumedBytes() -> Int {
        state.withLock { s in
            let n = s.consumedSinceReport
            s.consumedSinceReport = 0
            s.reportScheduled = false
            return n
        }
    }

    private func scheduleReportIfNeeded() {
        let schedule = state.withLock { s -> Bool in
            if s.reportScheduled || s.consumedSinceReport == 0 { return false }
            s.reportScheduled = true
            return true
        }
        if schedule { reportConsumed() }
    }

    // MARK: Reader side

    /// From now on the bytes the reader takes stay charged to the connection's request buffer budget until
    /// it calls ``releaseBytes(_:)``: for a reader that keeps them past the take (the gRPC deframer, until a
    /// whole message is handed on).
    public func holdBytesUntilReleased() {
        state.withLock { $0.holdsBytes = true }
    }

    /// Releases `count` taken bytes that a reader holding them (``holdBytesUntilReleased()``) has handed on.
    public func releaseBytes(_ count: Int) {
        charge?.release(count)
    }

    /// Takes the first buffered chunk, counting it as consumed (and released, unless the reader holds bytes).
    private func popChunk(_ s: inout State) -> (chunk: [UInt8], release: Bool)? {
        guard let c = s.chunks.popFirst() else { return nil }
        s.consumedSinceReport += c.count
        return (c, !s.holdsBytes)
    }

    /// Whether the body has ended without error.
    public var finishedCleanly: Bool { state.withLock { $0.finished && $0.error == nil } }

    /// Trailers that ended the body (empty until the body has ended, and when there were none).
    public var trailers: HTTP2Headers { state.withLock { $0.trailers } }

    /// The next chunk, or nil at the end. Throws if the stream was reset or the connection lost.
    public func next() async throws -> [UInt8]? {
        let immediate: Result<[UInt8]?, Error>? = state.withLock { s in
            if let popped = popChunk(&s) {
                if popped.release { charge?.release(popped.chunk.count) }
                return .success(popped.chunk)
            }
            if s.finished {
                if let e = s.error { return .failure(e) }
                return .success(nil)
            }
            return nil
        }
        if let immediate {
            scheduleReportIfNeeded()
            return try immediate.get()
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<[UInt8]?, Error>) in
                let ready: Result<[UInt8]?, Error>? = state.withLock { s in
                    if let popped = popChunk(&s) {
                        if popped.release { charge?.release(popped.chunk.count) }
                        return .success(popped.chunk)
                    }
                    if s.finished { return s.error.map { .failure($0) } ?? .success(nil) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiter = c
                    return nil
                }
                if let ready {
                    c.resume(with: ready)
                    scheduleReportIfNeeded()
                }
            }
        } onCancel: {
            let w = state.withLock { s -> CheckedContinuation<[UInt8]?, Error>? in
                let w = s.waiter
                s.waiter = nil
                return w
            }
            w?.resume(throwing: CancellationError())
        }
    }

    /// The next chunk joined with every chunk already buffered behind it, up to `maxBytes` (a single chunk
    /// may pass it), or nil at the end. For a relay, which then forwards a burst of small frames as one write
    /// instead of one write per frame.
    public func nextBatch(maxBytes: Int) async throws -> [UInt8]? {
        guard var batch = try await next() else { return nil }
        let more = state.withLock { s -> Bool in
            var took = false
            while let c = s.chunks.first, batch.count + c.count <= maxBytes, let popped = popChunk(&s) {
                if popped.release { charge?.release(popped.chunk.count) }
                batch.append(contentsOf: popped.chunk)
                took = true
            }
            return took
        }
        if more { scheduleReportIfNeeded() }
        return batch
    }

    /// Reads the whole body, failing past `limit` bytes.
    public func collect(upTo limit: Int = .max) async throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try await next() {
            out.append(contentsOf: chunk)
            if out.count > limit { throw HTTP2Error.bodyTooLarge }
        }
        return out
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let body: HTTP2InboundBody
        public mutating func next() async throws -> [UInt8]? { try await body.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}
