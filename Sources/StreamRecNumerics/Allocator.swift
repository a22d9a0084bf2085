// Process-wide allocator settings for tensor-heavy work, and the pool of large tensor buffers.
import Foundation

#if os(Linux)
/// glibc's mallopt(3); <malloc.h> is not part of the Glibc module.
@_silgen_name("mallopt") private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
private let M_TRIM_THRESHOLD: Int32 = -1, M_MMAP_THRESHOLD: Int32 = -3
#endif

enum Allocator {
    /// glibc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
    /// mmaps and unmaps them on free, so every activation tensor of a forward pass came back as
    /// zero-filled pages, one page fault each (7% of a DiffuRec sampling step). Raising the
    /// threshold and the trim threshold keeps freed tensors in the heap for the next op.
    /// Runs once, on the first Tape.
    static let keepFreedMemory: Void = {
        #if os(Linux)
        _ = mallopt(M_MMAP_THRESHOLD, 256 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }()
}


/// Large tensor buffers, kept after a tensor dies for the next one of the same size class.
/// A training step allocates the same activation shapes every time; served from the system
/// allocator, buffers above 64 MiB (and, on the cooperative threads' malloc arenas, smaller ones
/// too) came back as fresh zero-filled pages each step: the kernel's page clearing was a quarter
/// of a DiffuRec training step. Buffers under 128 KiB use malloc as before. Sizes round up to one
/// of eight classes per power of two (at most 12.5% slack), and at most `capacityBytes` are kept
/// idle (STREAMREC_TENSOR_POOL_MB, default 1024); beyond that a freed buffer is released.
public enum TensorPool {
    static let minimumFloats = 1 << 15
    public static let capacityBytes: Int = {
        if let text = ProcessInfo.processInfo.environment["STREAMREC_TENSOR_POOL_MB"], let mb = Int(text), mb >= 0 { return mb << 20 }
        return 1 << 30
    }()
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    nonisolated(unsafe) private static var idleBytes = 0

    /// The capacity actually allocated for `count` floats.
    static func sizeClass(_ count: Int) -> Int {
        guard count > minimumFloats else { return max(count, 1) }
        let step = 1 << (Int.bitWidth - count.leadingZeroBitCount - 1 - 3)
        return (count + step - 1) / step * step
    }

    /// Uninitialised room for `count` floats.
    public static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        let size = sizeClass(count)
        if size > minimumFloats {
            lock.lock()
            if let buffer = free[size]?.popLast() {
                idleBytes -= size * 4
                lock.unlock()
                return buffer
            }
            lock.unlock()
        }
        return .allocate(capacity: size)
    }

    /// Returns a buffer from `allocate(count)` with the same count.
    public static func deallocate(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        let size = sizeClass(count)
        if size > minimumFloats {
            lock.lock()
            if idleBytes + size * 4 <= capacityBytes {
                free[size, default: []].append(buffer)
                idleBytes += size * 4
                lock.unlock()
                return
            }
            lock.unlock()
        }
        buffer.deallocate()
    }
}
