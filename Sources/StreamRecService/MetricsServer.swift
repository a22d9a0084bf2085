// GET /metrics (Prometheus text) and GET /healthz on a local port, as a lifecycle Service.
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

public final class MetricsServer: Service, @unchecked Sendable {
    private let host: String
    private let port: Int
    private let registry: PrometheusCollectorRegistry
    private let health: @Sendable () -> String?
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let portLock = NSLock()
    private var bound: Int?

    /// `health` returns nil when healthy, else the reason (served as 503).
    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                health: @escaping @Sendable () -> String?) {
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// The port actually bound (useful with port 0), once running.
    public var boundPort: Int? { portLock.lock(); defer { portLock.unlock() }; return bound }

    public func run() async throws {
        let registry = self.registry
        let health = self.health
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(registry: registry, health: health))
                }
            }
            .bind(host: host, port: port).get()
        let bound = channel.localAddress?.port ?? port
        setBound(bound)
        logger.info("metrics endpoint on http://\(host):\(bound)/metrics and /healthz")
        await withGracefulShutdownHandler {
            try? await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        try await group.shutdownGracefully()
    }

    private func setBound(_ port: Int) {
        portLock.lock()
        bound = port
        portLock.unlock()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let registry: PrometheusCollectorRegistry
        let health: @Sendable () -> String?
        private var uri = ""

        init(registry: PrometheusCollectorRegistry, health: @escaping @Sendable () -> String?) {
            self.registry = registry
            self.health = health
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                uri = head.uri
            case .body:
                break
            case .end:
                let (status, contentType, body): (HTTPResponseStatus, String, [UInt8])
                switch uri.split(separator: "?").first.map(String.init) ?? uri {
                case "/metrics":
                    (status, contentType, body) = (.ok, "text/plain; version=0.0.4", registry.emitToBuffer())
                case "/healthz":
                    if let problem = health() {
                        (status, contentType, body) = (.serviceUnavailable, "text/plain", Array("unhealthy: \(problem)\n".utf8))
                    } else {
                        (status, contentType, body) = (.ok, "text/plain", Array("ok\n".utf8))
                    }
                default:
                    (status, contentType, body) = (.notFound, "text/plain", Array("try /metrics or /healthz\n".utf8))
                }
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: contentType)
                headers.add(name: "Content-Length", value: String(body.count))
                headers.add(name: "Connection", value: "close")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                var buffer = context.channel.allocator.buffer(capacity: body.count)
                buffer.writeBytes(body)
                context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
