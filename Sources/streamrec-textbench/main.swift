// streamrec-textbench: sentence-encoder throughput on an items.tsv (ops/bench-minilm.sh).
//
//   streamrec-textbench [--model DIR] [--items TSV] [--threads 2] [--batch 64] [--repeats 3]
//
// Texts are the item rows' columns after the id joined with a space (title + " " + genres),
// exactly as /work/shared/peers/minilm_peer.py builds them, so the two figures compare.
import Foundation
import StreamRecText

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("streamrec-textbench: \(message)\n".utf8))
    exit(2)
}

var model = SentenceEncoder.defaultDirectory(root: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
var items = "../shared/data/ml-1m/items.tsv"
var threads = 2, batch = 64, repeats = 3
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--model": model = URL(fileURLWithPath: value, isDirectory: true)
    case "--items": items = value
    case "--threads": threads = Int(value) ?? { fail("--threads \(value) is not a number") }()
    case "--batch": batch = Int(value) ?? { fail("--batch \(value) is not a number") }()
    case "--repeats": repeats = Int(value) ?? { fail("--repeats \(value) is not a number") }()
    default: fail("unknown option \(flag); options: --model DIR --items TSV --threads N --batch N --repeats N")
    }
}

guard let data = FileManager.default.contents(atPath: items) else { fail("cannot read \(items)") }
let texts = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
    .dropFirst()  // header
    .map { line in
        line.split(separator: "\t", omittingEmptySubsequences: false).dropFirst()
            .filter { !$0.isEmpty }.joined(separator: " ")
    }
guard !texts.isEmpty else { fail("\(items) has no rows") }

do {
    let result = try SentenceEncoder.measureThroughput(texts: texts, modelDirectory: model, threads: threads,
                                                       batchSize: batch, repeats: repeats)
    print(result)
} catch {
    fail("\(error)")
}
