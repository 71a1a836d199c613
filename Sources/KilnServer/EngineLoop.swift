import Foundation
import KilnEngine
import KilnModel

/// Why the engine loop ended a request's stream with an error of its own.
public enum EngineLoopError: Error, Sendable, Equatable {
    /// The loop was stopped (the server is shutting down) before the request finished.
    case stopped
}

/// Runs the scheduler on a thread of its own: requests arrive from RPC handlers, each step's events go
/// back to them through per-request streams. A client that goes away cancels its request, whose blocks
/// are free before the next step.
public final class EngineLoop: @unchecked Sendable {
    // Everything below is guarded by `condition`, except `scheduler` and `streams`, which only the loop
    // thread touches.
    private let condition = NSCondition()
    private var submissions: [(GenerationRequest, AsyncThrowingStream<StepEvent, Error>.Continuation)] = []
    private var endings: [(id: Int, reason: FinishReason)] = []
    private var nextID = 1
    private var stopped = false
    private var snapshot: EngineStats
    private var refused = 0
    /// `streams.count` after the latest step (published under `condition`).
    private var openStreams = 0
    private var streams: [Int: AsyncThrowingStream<StepEvent, Error>.Continuation] = [:]
    private let scheduler: Scheduler
    /// Signalled once the loop thread has ended every stream and returned.
    private let finished = DispatchSemaphore(value: 0)

    /// Called on the engine thread when a step fails (the backend's error: device lost, out of memory),
    /// after the requests in flight were failed with it.
    private let onFailure: @Sendable (Error) -> Void

    public init(scheduler: Scheduler, onFailure: @escaping @Sendable (Error) -> Void = { _ in }) {
        self.onFailure = onFailure
        self.scheduler = scheduler
        snapshot = scheduler.stats
        let thread = Thread { [weak self] in self?.run() }
        thread.name = "kiln-engine"
        thread.start()
    }

    /// Starts a generation; the stream yields its events and ends after the last one (or throws a
    /// refusal: a full queue, a bad request; or `EngineLoopError.stopped` when the loop stops first).
    public func generate(_ make: (Int) -> GenerationRequest) -> AsyncThrowingStream<StepEvent, Error> {
        condition.lock()
        let id = nextID
        nextID += 1
        condition.unlock()
        let request = make(id)
        return AsyncThrowingStream { continuation in
            continuation.onTermination = { [weak self] reason in
                if case .cancelled = reason { self?.end(id, reason: .cancelled) }
            }
            condition.lock()
            if stopped {
                condition.unlock()
                continuation.finish(throwing: EngineLoopError.stopped)
                return
            }
            submissions.append((request, continuation))
            condition.signal()
            condition.unlock()
        }
    }

    /// The scheduler's counters after its latest step, requests refused for a full queue, and the requests
    /// the loop holds a stream for (every one running or queued: 0 when idle, or a stream leaked).
    public var stats: (engine: EngineStats, refused: Int, streams: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (snapshot, refused, openStreams)
    }

    /// Ends request `id` before its next step: `.stop` when the caller matched a stop string (counted as
    /// completed), `.cancelled` when its client went away. Its blocks are free before the next step.
    public func end(_ id: Int, reason: FinishReason) {
        condition.lock()
        endings.append((id, reason))
        condition.signal()
        condition.unlock()
    }

    /// Stops the loop: every request still queued or running ends with `EngineLoopError.stopped` (the
    /// service answers UNAVAILABLE), and later requests are refused the same way. Returns once the loop
    /// thread has done so.
    public func stop() {
        condition.lock()
        let already = stopped
        stopped = true
        condition.signal()
        condition.unlock()
        if !already { finished.wait() }
    }

    private func run() {
        while true {
            condition.lock()
            while submissions.isEmpty && endings.isEmpty && !scheduler.hasWork && !stopped { condition.wait() }
            let incoming = submissions, ended = endings, stopping = stopped
            submissions.removeAll()
            endings.removeAll()
            condition.unlock()

            if stopping {
                for (_, continuation) in incoming { continuation.finish(throwing: EngineLoopError.stopped) }
                for (id, stream) in streams {
                    _ = scheduler.cancel(id, reason: .cancelled)
                    stream.finish(throwing: EngineLoopError.stopped)
                }
                streams.removeAll()
                publishStats(refusals: 0)
                finished.signal()
                return
            }

            var refusals = 0
            for (request, continuation) in incoming {
                do {
                    try scheduler.submit(request)
                    streams[request.id] = continuation
                } catch {
                    if case SchedulerError.queueFull = error { refusals += 1 }
                    continuation.finish(throwing: error)
                }
            }
            for (id, reason) in ended where scheduler.cancel(id, reason: reason) { streams.removeValue(forKey: id)?.finish() }
            defer { publishStats(refusals: refusals) }
            guard scheduler.hasWork else { continue }
            do {
                for event in try scheduler.step() {
                    streams[event.requestID]?.yield(event)
                    if event.finish != nil { streams.removeValue(forKey: event.requestID)?.finish() }
                }
            } catch {
                // A backend failure (device lost, out of memory) fails the requests in flight, not the process.
                for (id, stream) in streams { _ = scheduler.cancel(id, reason: .error); stream.finish(throwing: error) }
                streams.removeAll()
                onFailure(error)
            }
        }
    }

    private func publishStats(refusals: Int) {
        let stats = scheduler.stats
        let open = streams.count
        condition.lock()
        snapshot = stats
        refused += refusals
        openStreams = open
        condition.unlock()
    }
}
