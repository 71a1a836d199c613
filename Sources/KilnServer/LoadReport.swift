import Foundation
import KilnAPI

/// A worker's load in gRPC's ORCA per-call format: trailing metadata `endpoint-load-metrics-bin` holding an
/// `xds.data.orca.v3.OrcaLoadReport` whose named metrics are `running` and `waiting` (requests in the engine)
/// and `kv_free_blocks`. `kiln serve` sends it with the status of every Generate and Chat call; `kiln route`
/// reads it to see load that other routers put on a worker.
///
/// Per-call trailers rather than polling `GetStats`: the report is as fresh as the last answer, costs no
/// extra call or timer per worker, and arrives most often exactly when load matters (under traffic). Any ORCA
/// reader (Envoy's, gRPC's weighted round robin) can parse it.
public enum LoadReport {
    public static let header = "endpoint-load-metrics-bin"

    /// The header value (base64, as gRPC sends `-bin` metadata) for these numbers.
    public static func encode(running: Int, waiting: Int, freeBlocks: Int) -> String {
        var report = Xds_Data_Orca_V3_OrcaLoadReport()
        report.namedMetrics = ["running": Double(running), "waiting": Double(waiting), "kv_free_blocks": Double(freeBlocks)]
        return Data(report.serializedBytes()).base64EncodedString()
    }

    /// The numbers in a header value; nil when it is not a report with all three (a malformed report from a
    /// worker is ignored, never trusted).
    public static func decode(_ value: String) -> (running: Int, waiting: Int, freeBlocks: Int)? {
        guard value.utf8.count <= 4096 else { return nil }
        // gRPC implementations may send base64 without padding.
        let padded = value + String(repeating: "=", count: (4 - value.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: padded),
              let report = try? Xds_Data_Orca_V3_OrcaLoadReport(serializedBytes: [UInt8](data)) else { return nil }
        func count(_ name: String) -> Int? {
            guard let v = report.namedMetrics[name], v.isFinite, v >= 0, v <= 1e9 else { return nil }
            return Int(v)
        }
        guard let running = count("running"), let waiting = count("waiting"), let free = count("kv_free_blocks") else { return nil }
        return (running, waiting, free)
    }
}
