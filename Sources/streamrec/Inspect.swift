import ArgumentParser
import Foundation
import StreamRecStorage

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read an instance's LevelDB state (stop the instance first: LevelDB allows one process).",
        subcommands: [User.self, Sessions.self, Offsets.self, Stats.self]
    )

    struct StateOptions: ParsableArguments {
        @Option(help: "LevelDB state directory.") var state: String = "./state"
        @Flag(help: "Print JSON.") var json = false

        /// Opens the instance's LevelDB for the duration of `body` (it holds the directory's lock).
        func withStore<T>(_ body: (KeyValueStore) throws -> T) throws -> T {
            let store = try KeyValueStore(path: state)
            defer { store.close() }
            return try body(store)
        }
    }

    static func printJSON(_ object: Any) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }

    /// A session with external item ids, as `inspect user --json` and `inspect sessions` print it.
    static func sessionJSON(_ session: Session, _ vocabulary: Vocabulary) -> [String: Any] {
        ["user": session.user,
         "items": session.events.map { vocabulary.external(for: $0.item) ?? "#\($0.item)" },
         "timestamps": session.events.map(\.timestampMs),
         "last_seen_ms": session.lastSeenMs]
    }

    struct User: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one user's session (items oldest first).")
        @Argument(help: "External user id.") var id: String
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                try options.withStore { store in
                    let vocabulary = try Vocabulary(store: store)
                    // Inspect shows what is stored, whatever its age: the TTL is not applied here.
                    var session = try SessionStore(store: store, policy: SessionPolicy()).session(for: id, nowMs: 0)
                    session.user = id
                    if options.json {
                        try Inspect.printJSON(Inspect.sessionJSON(session, vocabulary))
                    } else {
                        print("user \(id): \(session.events.count) items, last seen \(session.lastSeenMs) ms")
                        for event in session.events {
                            print("  \(event.timestampMs)  \(vocabulary.external(for: event.item) ?? "#\(event.item)")")
                        }
                    }
                }
            }
        }
    }

    struct Sessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print every stored session, one JSON object per line.")
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                try options.withStore { store in
                    let vocabulary = try Vocabulary(store: store)
                    try SessionStore(store: store, policy: SessionPolicy()).forEachSession { session in
                        try Inspect.printJSON(Inspect.sessionJSON(session, vocabulary))
                    }
                }
            }
        }
    }

    struct Offsets: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the next offset per partition, as committed with the sessions.")
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                let offsets = try options.withStore { try SessionStore(store: $0, policy: SessionPolicy()).allOffsets() }
                if options.json {
                    try Inspect.printJSON(offsets.map { ["topic": $0.topic, "partition": Int($0.partition), "next_offset": $0.nextOffset] as [String: Any] })
                } else {
                    for o in offsets { print("\(o.topic)[\(o.partition)] next offset \(o.nextOffset)") }
                }
            }
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Count sessions and vocabulary items.")
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                let (sessions, items) = try options.withStore { store in
                    (try SessionStore(store: store, policy: SessionPolicy()).sessionCount(), try Vocabulary(store: store).count)
                }
                if options.json {
                    try Inspect.printJSON(["sessions": sessions, "items": items])
                } else {
                    print("sessions \(sessions)\nitems    \(items)")
                }
            }
        }
    }
}
