import Foundation
import Testing
@testable import StreamRecModels

@Suite struct DatasetTests {
    @Test func sharedFormatDirectoryWithTitles() throws {
        let directory = try TemporaryDirectory()
        try directory.file("sequences.txt", "1 10 11 12\n\n2\t11  12\r\n")
        try directory.file("items.tsv", "item_id\ttitle\tgenres\n10\tTen (1995)\tDrama|Comedy\n11\tEleven\t\n")
        let dataset = try SequenceDataset.load(path: directory.url.path)
        #expect(dataset.sequences.map(\.user) == ["1", "2"])
        #expect(dataset.sequences.map(\.items) == [["10", "11", "12"], ["11", "12"]])
        #expect(dataset.itemTitles == ["10": "Ten (1995)", "11": "Eleven"])
        #expect(dataset.source == directory.url.path)
        #expect(dataset.interactionCount == 5)
    }

    @Test func sequencesFileDirectlyAndWithoutTitles() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.file("sequences.txt", "u a b\n")
        try directory.file("items.tsv", "item_id\ttitle\textra\na\tA\tx\n")
        let direct = try SequenceDataset.load(path: path)
        #expect(direct.sequences.map(\.items) == [["a", "b"]])
        #expect(direct.itemTitles == ["a": "A"])
        let other = try SequenceDataset.load(path: try directory.file("train.txt", "v c d e\n"))
        #expect(other.sequences.map(\.user) == ["v"])
        #expect(other.itemTitles == nil)
    }

    @Test func movieLensIsSortedByTimePerUserKeepingFileOrderOnTies() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.file("ratings.dat", "1::5::3::300\n1::6::4::100\n2::5::5::50\n1::7::1::100\n1::8::2::99\n")
        let dataset = try SequenceDataset.load(path: path)
        #expect(dataset.sequences.map(\.user) == ["1", "2"])
        #expect(dataset.sequences[0].items == ["8", "6", "7", "5"])
        #expect(dataset.sequences[1].items == ["5"])
        #expect(dataset.itemTitles == nil)
        #expect(dataset.source == path)
    }

    @Test func csvWithAndWithoutHeader() throws {
        let directory = try TemporaryDirectory()
        let withHeader = try SequenceDataset.load(path: try directory.file("h.csv", "user,item,timestamp\na, x ,3\na,y,1\nb,z,2\na,w,1\n"))
        #expect(withHeader.sequences.map(\.user) == ["a", "b"])
        #expect(withHeader.sequences[0].items == ["y", "w", "x"])
        #expect(withHeader.sequences[1].items == ["z"])
        let bare = try SequenceDataset.load(path: try directory.file("n.CSV", "\"u1\",i1,20,extra\r\nu1,i2,10,extra\r\n"))
        #expect(bare.sequences.map(\.items) == [["i2", "i1"]])
        #expect(bare.sequences.map(\.user) == ["u1"])
    }

    /// The ModelError message of loading `text` as `name`, which must be badData and name path:line.
    func badRow(_ name: String, _ text: String, line: Int) throws -> String {
        let directory = try TemporaryDirectory()
        let path = try directory.file(name, text)
        guard let error = modelError({ _ = try SequenceDataset.load(path: path) }) else {
            Issue.record("\(name): a bad row was accepted")
            return ""
        }
        #expect(error.code == .badData)
        #expect(error.message.hasPrefix("\(path):\(line): "), "\(error)")
        return error.message
    }

    @Test func badRowsAreReportedAsFileLineReason() throws {
        #expect(try badRow("ratings.dat", "1::5::3::300\n1::6::4\n", line: 2).contains("too few fields"))
        #expect(try badRow("ratings.dat", "1::5::3::300\n\n1::6::4::noon\n", line: 3).contains("timestamp 'noon' is not an integer"))
        #expect(try badRow("ratings.dat", "1::5::3::300::9\n", line: 1).contains("too many fields"))
        #expect(try badRow("x.csv", "user,item,ts\na,x,1\na,y,soon\n", line: 3).contains("timestamp 'soon' is not an integer"))
        #expect(try badRow("x.csv", "a,x,1\na,y\n", line: 2).contains("too few fields"))
        #expect(try badRow("x.csv", "a,x,1\n,y,2\n", line: 2).contains("empty user"))
        #expect(try badRow("x.csv", "a,x,1\na,y,99999999999999999999\n", line: 2).contains("not an integer"))
        #expect(try badRow("s.txt", "1 2 3\nlonely\n", line: 2).contains("too few fields"))
    }

    @Test func badItemsFileIsReportedWithItsLine() throws {
        let directory = try TemporaryDirectory()
        try directory.file("sequences.txt", "u a b\n")
        let itemsPath = try directory.file("items.tsv", "item_id\ttitle\na\tA\nb-without-title\n")
        let error = modelError { _ = try SequenceDataset.load(path: directory.url.path) }
        #expect(error?.message.hasPrefix("\(itemsPath):3: ") == true, "\(String(describing: error))")
    }

    @Test func unknownPathsAndFormatsAreRefused() throws {
        let directory = try TemporaryDirectory()
        #expect(modelError { _ = try SequenceDataset.load(path: directory.path("absent.txt")) }?.code == .badData)
        let json = try directory.file("data.json", "{}")
        #expect(modelError { _ = try SequenceDataset.load(path: json) }?.code == .unsupported)
        #expect(modelError { _ = try SequenceDataset.load(path: directory.url.path) }?.message.contains("neither sequences.txt nor ratings.dat") == true)
        #expect(modelError { _ = try SequenceDataset.load(path: try directory.file("empty.txt", "\n\n")) }?.message.contains("no sequences") == true)
    }

    @Test func latin1FilesAreDecodedNotRefused() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path("latin1.txt")
        try Data([0x75, 0x20, 0x63, 0x61, 0x66, 0xE9, 0x20, 0x62, 0x0A]).write(to: URL(fileURLWithPath: path))  // "u café b"
        #expect(try SequenceDataset.load(path: path).sequences[0].items == ["café", "b"])
    }

    @Test func leaveOneOutFollowsTheStandardProtocol() {
        let dataset = SequenceDataset(sequences: [("u", ["a", "b", "c", "d"]), ("v", ["x", "y"]), ("w", ["p", "q", "r"])], source: "t")
        let split = dataset.leaveOneOut()
        #expect(split.users == ["u", "v", "w"])
        #expect(split.train == [["a", "b"], ["x", "y"], ["p"]])
        #expect(split.validation == ["c", nil, "q"])
        #expect(split.test == ["d", nil, "r"])
        #expect(split.validationCases.map(\.history) == [["a", "b"], ["p"]])
        #expect(split.validationCases.map(\.target) == ["c", "q"])
        #expect(split.testCases.map(\.history) == [["a", "b", "c"], ["p", "q"]])
        #expect(split.testCases.map(\.target) == ["d", "r"])
    }
}
