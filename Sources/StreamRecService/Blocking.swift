import Foundation
import ServiceLifecycle

/// Runs blocking work (librdkafka, LevelDB, training) on its own thread, never on Swift's
/// cooperative pool, and awaits its result.
public func onDedicatedThread<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do { continuation.resume(returning: try body()) } catch { continuation.resume(throwing: error) }
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// What every long-running part's Service does: runs its blocking loop on its own thread until
/// the loop returns, and turns graceful shutdown (SIGTERM/SIGINT through the ServiceGroup) or
/// task cancellation into `stop`, which the loop polls between units of work.
func runUntilStopped(thread name: String, stop: StopSignal, _ loop: @escaping @Sendable () throws -> Void) async throws {
    try await withGracefulShutdownHandler {
        try await withTaskCancellationHandler {
            try await onDedicatedThread(name: name, loop)
        } onCancel: {
            stop.stop()
        }
    } onGracefulShutdown: {
        stop.stop()
    }
}
