import Foundation
import KilnEngine
import KilnModel

/// Runs the scheduler on a thread of its own: requests arrive from RPC handlers, each step's events go
/// back to them through per-request streams. A client that goes away cancels its request, whose blocks
/// are free before the next step.
public final class EngineLoop: @unchecked Sendable {
    // Everything below is guarded by `condition`, except `scheduler`, which only the loop thread touches.
    private let condition = NSCondition()
    private var submissions: [(GenerationRequest, AsyncThrowingStream<StepEvent, Error>.Continuation)] = []
    private var cancellations: [Int] = []
    private var streams: [Int: AsyncThrowingStream<StepEvent, Error>.Continuation] = [:]
    private var nextID = 1
    private var stopped = false
    private var snapshot: EngineStats
    private var refused = 0
    private let scheduler: Scheduler

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
    /// refusal: a full queue, a bad request).
    public func generate(_ make: (Int) -> GenerationRequest) -> AsyncThrowingStream<StepEvent, Error> {
        condition.lock()
        let id = nextID
        nextID += 1
        condition.unlock()
        let request = make(id)
        return AsyncThrowingStream { continuation in
            continuation.onTermination = { [weak self] reason in
                if case .cancelled = reason { self?.cancel(id) }
            }
            condition.lock()
            submissions.append((request, continuation))
            condition.signal()
            condition.unlock()
        }
    }

    /// The scheduler's counters after its latest step, and requests refused for a full queue.
    public var stats: (engine: EngineStats, refused: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (snapshot, refused)
    }

    private func cancel(_ id: Int) {
        condition.lock()
        cancellations.append(id)
        condition.signal()
        condition.unlock()
    }

    public func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while submissions.isEmpty && cancellations.isEmpty && !scheduler.hasWork && !stopped { condition.wait() }
            if stopped { condition.unlock(); return }
            let incoming = submissions, cancelled = cancellations
            submissions.removeAll()
            cancellations.removeAll()
            condition.unlock()

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
            for id in cancelled where scheduler.cancel(id) { streams.removeValue(forKey: id)?.finish() }
            defer {
                let stats = scheduler.stats
                condition.lock()
                snapshot = stats
                refused += refusals
                condition.unlock()
            }
            guard scheduler.hasWork else { continue }
            do {
                for event in try scheduler.step() {
                    streams[event.requestID]?.yield(event)
                    if event.finish != nil { streams.removeValue(forKey: event.requestID)?.finish() }
                }
            } catch {
                // A backend failure (device lost, out of memory) fails the requests in flight, not the process.
                for (id, stream) in streams { _ = scheduler.cancel(id); stream.finish(throwing: error) }
                streams.removeAll()
                onFailure(error)
            }
        }
    }
}
