// TensorPool: size classes cover the request with at most 12.5% slack, freed buffers come back
// for the next tensor of their class, and tensors built on pooled buffers start zeroed.
import Foundation
import Testing
@testable import StreamRecNumerics

@Suite struct TensorPoolTests {
    @Test func sizeClassesCoverTheRequestWithLittleSlack() {
        var previous = 0
        for count in [1, 100, TensorPool.minimumFloats, TensorPool.minimumFloats + 1, 40_000, 65_536, 100_000, 3_276_800, 13_107_200] {
            let size = TensorPool.sizeClass(count)
            #expect(size >= count)
            #expect(size >= previous)
            if count > TensorPool.minimumFloats { #expect(Double(size) <= Double(count) * 1.125 + 1) } else { #expect(size == max(count, 1)) }
            previous = size
        }
        // Requests in one class share buffers.
        #expect(TensorPool.sizeClass(100_000) == TensorPool.sizeClass(100_001))
    }

    @Test func aFreedBufferIsReusedAndTensorsStillStartZeroed() {
        let count = 200_003
        let a = TensorPool.allocate(count)
        a.update(repeating: 7, count: count)
        TensorPool.deallocate(a, count: count)
        let b = TensorPool.allocate(count)
        #expect(a == b, "the freed buffer of this class comes back")
        TensorPool.deallocate(b, count: count)
        // A zeroed tensor on the reused (dirty) buffer is all zeros.
        let t = Tensor(zeros: [count])
        #expect(t.values.allSatisfy { $0 == 0 })
    }
}
