import CLinux
import Glibc
import HeapModule
import Synchronization

/// Something registered with an ``EventLoop`` for readiness events on a file descriptor.
///
/// Only the owning loop's thread ever calls these methods.
protocol EventLoopSource: AnyObject {
    /// Called with the `EPOLL*` bits that fired.
    func handleEvents(_ events: UInt32)
}

/// Something that wants one write-out at the end of the current loop iteration.
protocol EventLoopFlushable: AnyObject {
    func flushNow()
}

/// One epoll thread.
///
/// A loop owns every connection registered on it: their state is touched only on this thread, so it
/// needs no locks. Other threads (Swift concurrency tasks) hand work over with ``execute(_:)``, which
/// appends to a short mutex-guarded queue and signals an eventfd; the lock is held only for the append.
public final class EventLoop: @unchecked Sendable {
    /// Index within its group, for logs.
    public let index: Int
    private let epollFD: Int32
    private let wakeFD: Int32
    private let queue = Mutex<PendingWork>(PendingWork())
    private var thread: pthread_t?
    /// The loop thread's pthread id, published by the loop thread when it starts (atomically: any thread
    /// reads it); compared with `pthread_self()` (no syscall, unlike gettid: this check runs on every task
    /// enqueue).
    private let loopThread = Atomic<UInt>(0)
    private let started = Mutex<Bool>(false)

    // Loop-confined state.
    private var sources: [Int32: EventLoopSource] = [:]
    private var timers = Heap<ScheduledTimer>()
    private var cancelledTimers = Set<UInt64>()
    private var nextTimerID: UInt64 = 1
    private var flushQueue: [EventLoopFlushable] = []
    private var stopping = false
    /// Scratch space shared by every connection on this loop for socket reads.
    let readBuffer: UnsafeMutableRawBufferPointer

    private struct PendingWork {
        var items: [@Sendable () -> Void] = []
        var signalled = false
    }

    init(index: Int) throws {
        self.index = index
        let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard ep >= 0 else { throw HTTP2Error.system("epoll_create1", errno) }
        let wake = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wake >= 0 else { close(ep); throw HTTP2Error.system("eventfd", errno) }
        epollFD = ep
        wakeFD = wake
        readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = wake
        guard epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev) == 0 else {
            close(ep); close(wake)
            throw HTTP2Error.system("epoll_ctl(eventfd)", errno)
        }
    }

    deinit {
        close(epollFD)
        close(wakeFD)
        readBuffer.deallocate()
    }

    /// Starts the loop's thread.
    func start() throws {
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
            loop.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw HTTP2Error.system("pthread_create", rc)
        }
        thread = t
    }

    /// Whether the caller runs on this loop's thread.
    public var inEventLoop: Bool {
        let id = loopThread.load(ordering: .acquiring)
        return id != 0 && pthread_equal(pthread_self(), id) != 0
    }

    /// Runs `work` on the loop's thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let local = inEventLoop
        let mustSignal = queue.withLock { q -> Bool in
            q.items.append(work)
            // From the loop's own thread no wake-up is needed: the loop drains the queue before it waits.
            if q.signalled || local { return false }
            q.signalled = true
            return true
        }
        if mustSignal {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    /// Runs `work` on the loop after `delay` nanoseconds. Loop thread only. Returns an id for ``cancelTimer(_:)``.
    @discardableResult
    func schedule(afterNanos delay: UInt64, _ work: @escaping () -> Void) -> UInt64 {
        let id = nextTimerID
        nextTimerID += 1
        timers.insert(ScheduledTimer(deadline: MonotonicClock.nanos() &+ delay, id: id, work: work))
        return id
    }

    /// Cancels a timer made by ``schedule(afterNanos:_:)``. Loop thread only.
    func cancelTimer(_ id: UInt64) {
        cancelledTimers.insert(id)
    }

    /// Asks for `flushable.flushNow()` once at the end of this iteration, so that writes made by many
    /// streams in one iteration leave in one syscall. Loop thread only.
    func enqueueFlush(_ flushable: EventLoopFlushable) {
        flushQueue.append(flushable)
    }

    func register(fd: Int32, source: EventLoopSource, events: UInt32) throws {
        var ev = epoll_event()
        ev.events = events
        ev.data.fd = fd
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &ev) == 0 else {
            throw HTTP2Error.system("epoll_ctl(ADD)", errno)
        }
        sources[fd] = source
    }

    func modify(fd: Int32, events: UInt32) {
        var ev = epoll_event()
        ev.events = events
        ev.data.fd = fd
        _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &ev)
    }

    func deregister(fd: Int32) {
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
        sources[fd] = nil
    }

    /// Asks the thread to finish its current iteration and exit.
    func stop() {
        execute { [self] in stopping = true }
    }

    /// Waits for the thread to exit.
    func join() {
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }

    private func run() {
        loopThread.store(pthread_self(), ordering: .releasing)
        let maxEvents = 128
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: maxEvents)
        defer { events.deallocate() }
        while !stopping {
            let timeout = nextTimeoutMillis()
            let n = epoll_wait(epollFD, events, Int32(maxEvents), timeout)
            if n < 0 {
                if errno == EINTR { continue }
                break
            }
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                if fd == wakeFD {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    continue
                }
                sources[fd]?.handleEvents(events[i].events)
            }
            runPendingWork()
            runDueTimers()
            drainFlushQueue()
        }
    }

    private func runPendingWork() {
        // Work queued by the work itself (a task resuming on this loop) runs in the same iteration, up to
        // a bound so that sockets are not starved; anything left makes the next wait return at once.
        for _ in 0..<16 {
            let items = queue.withLock { q -> [@Sendable () -> Void] in
                q.signalled = false
                let items = q.items
                q.items.removeAll(keepingCapacity: true)
                return items
            }
            if items.isEmpty { return }
            for item in items { item() }
        }
    }

    private var hasPendingWork: Bool { queue.withLock { !$0.items.isEmpty } }

    private func drainFlushQueue() {
        while !flushQueue.isEmpty {
            let batch = flushQueue
            flushQueue.removeAll(keepingCapacity: true)
            for f in batch { f.flushNow() }
        }
    }

    private func runDueTimers() {
        let now = MonotonicClock.nanos()
        while let top = timers.min, top.deadline <= now {
            let timer = timers.removeMin()
            if cancelledTimers.remove(timer.id) != nil { continue }
            timer.work()
        }
    }

    private func nextTimeoutMillis() -> Int32 {
        if hasPendingWork { return 0 }
        while let top = timers.min, cancelledTimers.contains(top.id) {
            cancelledTimers.remove(top.id)
            timers.removeMin()
        }
        guard let top = timers.min else { return -1 }
        let now = MonotonicClock.nanos()
        if top.deadline <= now { return 0 }
        return Int32(min((top.deadline - now + 999_999) / 1_000_000, 60_000))
    }
}

private struct ScheduledTimer: Comparable {
    let deadline: UInt64
    let id: UInt64
    let work: () -> Void

    static func < (a: ScheduledTimer, b: ScheduledTimer) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.id < b.id
    }
    static func == (a: ScheduledTimer, b: ScheduledTimer) -> Bool { a.id == b.id }
}

/// Monotonic time in nanoseconds, for deadlines inside the transport.
enum MonotonicClock {
    static func nanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Tasks can run on a loop's thread (`Task(executorPreference: loop)`): a request handler then talks to
/// its connection without a thread hop in either direction.
extension EventLoop: TaskExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        execute { unowned.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
