// Process-wide allocator settings for tensor-heavy work.

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
