import Foundation
import KilnModel

/// The random generator tests use: SplitMix64 with a seed that is printed, so that any failure can be
/// replayed with `KILN_TEST_SEED=N`. Without KILN_TEST_SEED the seed is `fixed` when the test gives one
/// (its sequence is then the same every run), else a new random one.
public struct TestRandom: RandomNumberGenerator {
    private var generator: SplitMix64
    public let seed: UInt64

    public init(fixed: UInt64? = nil, _ caller: String = #function, file: String = #fileID) {
        let replay = ProcessInfo.processInfo.environment["KILN_TEST_SEED"].flatMap { UInt64($0) }
        seed = replay ?? fixed ?? UInt64.random(in: 0...UInt64.max)
        generator = SplitMix64(seed: seed)
        print("\(file) \(caller): random seed \(seed) (replay with KILN_TEST_SEED=\(seed))")
    }

    public mutating func next() -> UInt64 { generator.next() }
}
