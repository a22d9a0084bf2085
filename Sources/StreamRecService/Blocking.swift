import Foundation

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
