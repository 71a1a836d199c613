import ArgumentParser
import Foundation
import KilnRouter

/// `kiln bench ring`: the router's ring lookup and its bounded-load pick with the owner full, in ns per call.
struct BenchRing: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ring", abstract: "Hash ring lookup and bounded-load pick, ns/op.")

    @Option(help: "Backends on the ring.") var backends = 100
    @Option(help: "Virtual nodes per backend.") var vnodes = HashRing.defaultVirtualNodes
    @Option(help: "Lookups to time.") var lookups = 10_000_000

    func validate() throws {
        // At least two backends: the pick benchmark needs an owner and somewhere to spill.
        guard (2...100_000).contains(backends) else { throw ValidationError("--backends must be from 2 to 100000") }
        guard (1...10_000).contains(vnodes) else { throw ValidationError("--vnodes must be from 1 to 10000") }
        guard lookups >= 100 else { throw ValidationError("--lookups must be at least 100") }
    }

    func run() throws {
        let members = (0..<backends).map { RingMember(name: "10.0.\($0 / 256).\($0 % 256):8080") }
        let ring = HashRing(members: members, virtualNodes: vnodes)
        var generator = SystemRandomNumberGenerator()
        let keys = (0..<(1 << 16)).map { _ in generator.next() as UInt64 }
        var sink = 0
        let lookupStart = DispatchTime.now().uptimeNanoseconds
        for i in 0..<lookups { sink &+= ring.owner(ofHash: keys[i & 0xFFFF]) ?? 0 }
        let lookupNs = Double(DispatchTime.now().uptimeNanoseconds - lookupStart) / Double(lookups)

        // Keys whose owner (member 0) is over its bound: every pick spills to the best of the other 99.
        let hashing = BoundedLoadHashing(ring: ring)
        var inFlight = [Int](repeating: 0, count: backends)
        inFlight[0] = 1_000
        var owned = keys.filter { ring.owner(ofHash: $0) == 0 }
        if owned.isEmpty { owned = [keys[0]] }  // member 0 owns none of the sampled keys: time a key it does not own
        let picks = max(1, lookups / 100)
        let pickStart = DispatchTime.now().uptimeNanoseconds
        for i in 0..<picks { sink &+= hashing.pick(keyHash: owned[i % owned.count], inFlight: inFlight, eligible: { _ in true })?.member ?? 0 }
        let pickNs = Double(DispatchTime.now().uptimeNanoseconds - pickStart) / Double(picks)
        print("BENCH ring_lookup_\(backends)x\(vnodes) \(String(format: "%.1f", lookupNs)) ns")
        print("BENCH bounded_pick_owner_full_\(backends) \(String(format: "%.0f", pickNs)) ns")
        if sink == 42 { print("") }  // keeps the loops from being optimised away
    }
}
