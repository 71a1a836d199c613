import CNGHTTP2
import DequeModule
import Synchronization

/// Bytes a producer task hands to one stream, waiting to be framed as DATA by the connection's loop.
///
/// The buffer is bounded: ``write(_:)`` suspends above the high watermark and resumes once the loop has
/// drained it below the low watermark, so a slow peer slows the producer instead of growing memory.
/// When the buffer is empty the data provider answers `NGHTTP2_ERR_DEFERRED`; the next write asks the
/// loop to resume the stream.
final class OutboundBody: Sendable {
    private struct State {
        var chunks = Deque<[UInt8]>()
        var headOffset = 0
        var buffered = 0
        var finished = false
        var trailers = HTTP2Headers()
        var failure: HTTP2Error?
        var waiter: CheckedContinuation<Void, Error>?
        /// The provider answered DEFERRED; the next write must resume the stream.
        var deferred = false
        /// The peer has its complete answer and asked us to stop (RST_STREAM NO_ERROR): writes are dropped.
        var discarding = false
    }

    private let state = Mutex(State())
    let highWatermark: Int
    let lowWatermark: Int
    /// Asks the owning loop to call `nghttp2_session_resume_data` for this stream.
    private let scheduleResume: @Sendable () -> Void

    init(highWatermark: Int = 256 * 1024, lowWatermark: Int = 64 * 1024, scheduleResume: @escaping @Sendable () -> Void) {
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
        self.scheduleResume = scheduleResume
    }

    // MARK: Producer side

    /// Queues bytes; suspends while the buffer is above its high watermark.
    func write(_ bytes: [UInt8]) async throws {
        if bytes.isEmpty { return }
        let (mustResume, mustWait) = try state.withLock { s -> (Bool, Bool) in
            if s.discarding { return (false, false) }
            if let f = s.failure { throw f }
            if s.finished { throw HTTP2Error.invalidState("write after finish") }
            s.chunks.append(bytes)
            s.buffered += bytes.count
            let resume = s.deferred
            s.deferred = false
            return (resume, s.buffered > highWatermark)
        }
        if mustResume { scheduleResume() }
        guard mustWait else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
                let outcome: Result<Void, Error>? = state.withLock { s in
                    if let f = s.failure { return .failure(f) }
                    if s.buffered <= lowWatermark { return .success(()) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiter = c
                    return nil
                }
                if let outcome { c.resume(with: outcome) }
            }
        } onCancel: {
            let w = state.withLock { s -> CheckedContinuation<Void, Error>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            w?.resume(throwing: CancellationError())
        }
    }

    /// Ends the body, with trailers if any. Later writes fail.
    func finish(trailers: HTTP2Headers = HTTP2Headers()) {
        let mustResume = state.withLock { s -> Bool in
            if s.finished || s.failure != nil { return false }
            s.finished = true
            s.trailers = trailers
            let resume = s.deferred
            s.deferred = false
            return resume
        }
        if mustResume { scheduleResume() }
    }

    /// Whether ``finish(trailers:)`` has been called.
    var isFinished: Bool { state.withLock { $0.finished } }

    // MARK: Loop side

    /// The stream ended cleanly while the producer may still be writing: from now on writes succeed and
    /// go nowhere, and a producer waiting for room is released.
    func discardFurtherWrites() {
        let w = state.withLock { s -> CheckedContinuation<Void, Error>? in
            s.discarding = true
            s.chunks.removeAll()
            s.buffered = 0
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume()
    }

    /// Fails the producer: the stream is gone.
    func fail(_ error: HTTP2Error) {
        let w = state.withLock { s -> CheckedContinuation<Void, Error>? in
            if s.failure == nil { s.failure = error }
            s.chunks.removeAll()
            s.buffered = 0
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume(throwing: error)
    }

    /// What the data provider should do next.
    enum ReadOutcome {
        /// `n` bytes copied; `end` when the body is complete with them, with trailers when there are any.
        case bytes(Int, end: Bool, trailers: HTTP2Headers)
        case deferred
    }

    /// Copies up to `capacity` bytes into `buffer` for the data provider.
    func read(into buffer: UnsafeMutablePointer<UInt8>, capacity: Int) -> ReadOutcome {
        var waiter: CheckedContinuation<Void, Error>?
        let outcome = state.withLock { s -> ReadOutcome in
            var copied = 0
            while copied < capacity, let first = s.chunks.first {
                let available = first.count - s.headOffset
                let n = min(available, capacity - copied)
                first.withUnsafeBufferPointer { src in
                    (buffer + copied).update(from: src.baseAddress! + s.headOffset, count: n)
                }
                copied += n
                if n == available {
                    s.chunks.removeFirst()
                    s.headOffset = 0
                } else {
                    s.headOffset += n
                }
            }
            s.buffered -= copied
            if s.waiter != nil && s.buffered <= lowWatermark {
                waiter = s.waiter
                s.waiter = nil
            }
            if s.buffered == 0 && s.finished {
                return .bytes(copied, end: true, trailers: s.trailers)
            }
            if copied == 0 {
                s.deferred = true
                return .deferred
            }
            return .bytes(copied, end: false, trailers: HTTP2Headers())
        }
        waiter?.resume()
        return outcome
    }
}

