/// One backend's health as the router's active checks see it, a pure state machine.
///
/// Two sources feed it. A `grpc.health.v1.Health/Watch` stream pushes the worker's own word the moment it
/// changes, and that word is taken at once. `Check` probes (every `--health-interval`, and the only source
/// while no Watch stream is open) move it only after `rise` successes or `fall` failures in a row, so one lost
/// probe does not flap a backend. A backend starts up: a router that has just started serves at once, and the
/// first probe or Watch message corrects it.
public struct BackendHealth: Sendable, Equatable {
    public struct Thresholds: Sendable, Equatable {
        /// Consecutive successful probes that bring a down backend up.
        public var rise: Int
        /// Consecutive failed probes that take an up backend down.
        public var fall: Int
        public init(rise: Int = 2, fall: Int = 2) {
            self.rise = max(1, rise)
            self.fall = max(1, fall)
        }
    }

    public enum Event: Sendable, Equatable {
        /// The Watch stream reported SERVING (true) or anything else (false).
        case watched(serving: Bool)
        /// A `Check` probe answered SERVING (true), or answered otherwise, timed out or could not connect (false).
        case probed(serving: Bool)
    }

    public let thresholds: Thresholds
    public private(set) var isUp = true
    /// Successes (positive) or failures (negative) in a row since the last change of direction.
    public private(set) var streak = 0

    public init(thresholds: Thresholds = Thresholds()) {
        self.thresholds = thresholds
    }

    /// Applies an event; returns true when it changed `isUp`.
    @discardableResult
    public mutating func apply(_ event: Event) -> Bool {
        let before = isUp
        switch event {
        case .watched(let serving):
            isUp = serving
            streak = 0
        case .probed(true):
            streak = streak > 0 ? streak + 1 : 1
            if !isUp && streak >= thresholds.rise { isUp = true; streak = 0 }
        case .probed(false):
            streak = streak < 0 ? streak - 1 : -1
            if isUp && -streak >= thresholds.fall { isUp = false; streak = 0 }
        }
        return isUp != before
    }
}
