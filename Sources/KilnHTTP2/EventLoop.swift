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
    /// Due times, earliest first; an entry whose id has left `timerWork` was cancelled and is skipped.
    private var timers = Heap<ScheduledTimer>()
    /// The work of each timer still to run, by id: a cancel drops the work at once, and the heap is
    /// rebuilt when most of it is cancelled entries (per-call deadline timers, mostly cancelled, would
    /// otherwise pile up there until due).
    private var timerWork: [UInt64: () -> Void] = [:]
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
        timers.insert(ScheduledTimer(deadline: MonotonicClock.nanos() &+ delay, id: id))
        timerWork[id] = work
        return id
    }

    /// Cancels a timer made by ``schedule(afterNanos:_:)``. Loop thread only.
    func cancelTimer(_ id: UInt64) {
        guard timerWork.removeValue(forKey: id) != nil else { return }
        if timers.count > 64 && timers.count > 2 * timerWork.count {
            timers = Heap(timers.unordered.filter { timerWork[$0.id] != nil })
        }
    }

    /// Timers in the heap (cancelled ones included until dropped) and timers still to run. Loop thread only;
    /// for tests of the heap's compaction.
    var timerCounts: (heap: Int, live: Int) { (timers.count, timerWork.count) }

    /// Runs `work` on the loop after `delay` nanoseconds (millisecond resolution). Safe from any thread.
    public func scheduleTimer(afterNanos delay: UInt64, _ work: @escaping @Sendable () -> Void) -> LoopTimer {
        let timer = LoopTimer(loop: self)
        if inEventLoop {
            timer.arm(delay: delay, work)
        } else {
            execute { timer.arm(delay: delay, work) }
        }
        return timer
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
            timerWork.removeValue(forKey: timer.id)?()
        }
    }

    private func nextTimeoutMillis() -> Int32 {
        if hasPendingWork { return 0 }
        while let top = timers.min, timerWork[top.id] == nil {
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

    static func < (a: ScheduledTimer, b: ScheduledTimer) -> Bool {
        a.deadline != b.deadline ? a.deadline < b.deadline : a.id < b.id
    }
    static func == (a: ScheduledTimer, b: ScheduledTimer) -> Bool { a.id == b.id }
}

/// A timer made by ``EventLoop/scheduleTimer(afterNanos:_:)``, to cancel. Its work runs at most once.
public final class LoopTimer: Sendable {
    private let loop: EventLoop
    /// The loop's id for the timer once armed (0 before); set and read on the loop only, kept in an atomic
    /// so that the class is honestly `Sendable`.
    private let id = Atomic<UInt64>(0)
    private let cancelled = Atomic<Bool>(false)

    init(loop: EventLoop) { self.loop = loop }

    /// Loop side.
    func arm(delay: UInt64, _ work: @escaping @Sendable () -> Void) {
        guard !cancelled.load(ordering: .acquiring) else { return }
        id.store(loop.schedule(afterNanos: delay, work), ordering: .releasing)
    }

    /// Stops the timer if it has not fired. Safe from any thread.
    public func cancel() {
        guard !cancelled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let loop = self.loop
        if loop.inEventLoop {
            let armed = id.load(ordering: .acquiring)
            if armed != 0 { loop.cancelTimer(armed) }
        } else {
            // Arming, if still queued, sees the flag; an armed timer is cancelled on the loop.
            loop.execute { [self] in
                let armed = id.load(ordering: .acquiring)
                if armed != 0 { loop.cancelTimer(armed) }
            }
        }
    }
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
