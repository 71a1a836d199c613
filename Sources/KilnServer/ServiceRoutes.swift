import KilnHTTP2
import KilnRPC

/// The routes `kiln serve` mounts: gRPC health, the services the caller registers (the inference service),
/// server reflection over those with a schema, and, only when asked, the demo routes.
public enum ServiceRoutes {
    /// `health`'s status the caller may change; `demoRoutes` mounts `DemoRoutes` as well (benchmarks, tests).
    /// `relayed` names services served by handlers outside the RPC server (`kiln route`'s relay, mounted by
    /// `routes`), so that reflection lists them too.
    public static func router(health: HealthService = HealthService(), demoRoutes: Bool = false, relayed: [String] = [],
                              services: (inout RPCServer) -> Void = { _ in },
                              routes: (inout HTTP2Router) -> Void = { _ in }) -> HTTP2Router {
        var router = HTTP2Router()
        var rpc = RPCServer()
        if demoRoutes { DemoRoutes.mount(on: &router, rpc: &rpc) }
        health.register(on: &rpc)
        services(&rpc)
        // Reflection lists the registered services that have a schema (the benchmark echo has none).
        let files = ReflectionService.kilnFiles
        let described = Set(files.flatMap(\.symbols))
        let registered = Set(rpc.paths.compactMap { $0.split(separator: "/").first.map(String.init) } + relayed)
        let listed = registered.union(["grpc.reflection.v1.ServerReflection"]).filter(described.contains)
        ReflectionService(services: Array(listed), files: files).registerBoth(on: &rpc)
        rpc.install(into: &router)
        routes(&router)
        return router
    }
}
