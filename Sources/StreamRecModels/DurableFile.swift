// The one crash-safe file write: snapshots, checkpoints and the model registry (its files, its
// `current` pointer and its history) all go through it.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum DurableFile {
    /// What failed, with the system's reason; callers wrap it in their own error type, which
    /// says what to do.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let operation: String
        public let reason: String
        public var description: String { "\(operation) failed (\(reason))" }

        init(_ operation: String) {
            self.operation = operation
            reason = String(cString: strerror(errno))
        }
    }

    /// Writes `bytes` to a temporary file beside `path`, flushes it, renames it over `path` and
    /// flushes the directory: a reader (or a crash) sees the old file or the new one, never half.
    /// Creates missing directories.
    public static func replace(_ path: String, with bytes: some ContiguousBytes) throws(Failure) {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            errno = EACCES
            throw Failure("creating directory \(directory.path)")
        }
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UUID().uuidString.prefix(8)).tmp").path
        var renamed = false
        defer { if !renamed { unlink(temporary) } }
        try write(temporary, bytes, flags: O_EXCL)
        guard rename(temporary, path) == 0 else { throw Failure("renaming \(temporary) to \(path)") }
        renamed = true
        syncDirectory(directory.path)
    }

    /// Creates (or truncates) `path` and writes and flushes `bytes`: for files in a staging
    /// directory that is itself renamed into place.
    public static func create(_ path: String, with bytes: some ContiguousBytes) throws(Failure) {
        try write(path, bytes, flags: O_TRUNC)
    }

    /// Appends `bytes` to `path` (created if missing) and flushes it.
    public static func append(_ path: String, _ bytes: some ContiguousBytes) throws(Failure) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure("opening \(path)") }
        defer { close(fd) }
        try writeAll(fd, bytes, path)
        guard fsync(fd) == 0 else { throw Failure("flushing \(path)") }
    }

    /// Flushes a directory, so a rename in it survives a crash. Some network filesystems refuse
    /// fsync on a directory; the rename is still atomic there, so that is not an error.
    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    private static func write(_ path: String, _ bytes: some ContiguousBytes, flags: Int32) throws(Failure) {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0o644)
        guard fd >= 0 else { throw Failure("creating \(path)") }
        do {
            try writeAll(fd, bytes, path)
        } catch {
            close(fd)
            throw error
        }
        guard fsync(fd) == 0 else {
            let failure = Failure("flushing \(path)")
            close(fd)
            throw failure
        }
        guard close(fd) == 0 else { throw Failure("closing \(path)") }
    }

    private static func writeAll(_ fd: Int32, _ bytes: some ContiguousBytes, _ path: String) throws(Failure) {
        let failure: Failure? = bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = systemWrite(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return Failure("writing \(path)")
                }
                done += n
            }
            return nil
        }
        if let failure { throw failure }
    }

    @inline(__always)
    private static func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
        #if canImport(Glibc)
        return Glibc.write(fd, buffer, count)
        #else
        return Darwin.write(fd, buffer, count)
        #endif
    }
}
