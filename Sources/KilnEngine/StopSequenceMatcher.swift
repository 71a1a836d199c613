/// Finds stop sequences in streamed text, across token boundaries. Text that could be the start of a stop
/// sequence is held back until it is known not to be; the stop sequence itself is never emitted.
public struct StopSequenceMatcher: Sendable {
    private let stops: [[Unicode.Scalar]]
    private var pending: [Unicode.Scalar] = []
    public private(set) var matched: String?

    public init(_ stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }.map { Array($0.unicodeScalars) }
    }

    /// Adds generated text; returns what may be shown now. After a match, `matched` is set and the text
    /// before the stop sequence is returned (nothing after it ever is).
    public mutating func feed(_ text: String) -> String {
        guard matched == nil else { return "" }
        pending += text.unicodeScalars
        // Earliest complete occurrence of any stop sequence.
        var earliest: (at: Int, stop: [Unicode.Scalar])?
        for stop in stops where stop.count <= pending.count {
            for start in 0...(pending.count - stop.count) where earliest.map({ start < $0.at }) ?? true {
                if pending[start..<start + stop.count].elementsEqual(stop) { earliest = (start, stop); break }
            }
        }
        if let hit = earliest {
            matched = String(String.UnicodeScalarView(hit.stop))
            let out = String(String.UnicodeScalarView(pending[..<hit.at]))
            pending.removeAll()
            return out
        }
        // Hold back the longest tail that is a proper prefix of some stop sequence.
        var hold = 0
        for stop in stops {
            for length in stride(from: min(stop.count - 1, pending.count), to: hold, by: -1)
            where pending[(pending.count - length)...].elementsEqual(stop[..<length]) {
                hold = length
                break
            }
        }
        let out = String(String.UnicodeScalarView(pending[..<(pending.count - hold)]))
        pending.removeFirst(pending.count - hold)
        return out
    }

    /// At the end of generation: whatever was held back (it did not become a stop sequence).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return matched == nil ? String(String.UnicodeScalarView(pending)) : ""
    }
}
