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
    }

    struct User: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print one user's session (items oldest first).")
        @Argument(help: "External user id.") var id: String
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                let store = try KeyValueStore(path: options.state)
                defer { store.close() }
                let vocabulary = try Vocabulary(store: store)
                let sessions = SessionStore(store: store, policy: SessionPolicy())
                // Inspect shows what is stored, whatever its age: TTL is not applied here.
                let session = try sessions.session(for: id, nowMs: 0)
                let items = session.events.map { vocabulary.external(for: $0.item) ?? "#\($0.item)" }
                if options.json {
                    let obj: [String: Any] = ["user": id, "items": items, "timestamps": session.events.map(\.timestampMs),
                                              "last_seen_ms": session.lastSeenMs]
                    let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    print("user \(id): \(items.count) items, last seen \(session.lastSeenMs) ms")
                    for (item, event) in zip(items, session.events) { print("  \(event.timestampMs)  \(item)") }
                }
            }
        }
    }

    struct Sessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print every stored session, one JSON object per line.")
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                let store = try KeyValueStore(path: options.state)
                defer { store.close() }
                let vocabulary = try Vocabulary(store: store)
                try SessionStore(store: store, policy: SessionPolicy()).forEachSession { session in
                    let obj: [String: Any] = ["user": session.user,
                                              "items": session.events.map { vocabulary.external(for: $0.item) ?? "#\($0.item)" },
                                              "timestamps": session.events.map(\.timestampMs)]
                    let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                }
            }
        }
    }

    struct Offsets: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the next offset per partition, as committed with the sessions.")
        @OptionGroup var options: StateOptions

        func run() async throws {
            try await userFacing {
                let store = try KeyValueStore(path: options.state)
                defer { store.close() }
                let offsets = try SessionStore(store: store, policy: SessionPolicy()).allOffsets()
                if options.json {
                    let list = offsets.map { ["topic": $0.topic, "partition": Int($0.partition), "next_offset": $0.nextOffset] as [String: Any] }
                    let data = try JSONSerialization.data(withJSONObject: list, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
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
                let store = try KeyValueStore(path: options.state)
                defer { store.close() }
                let sessions = try SessionStore(store: store, policy: SessionPolicy()).sessionCount()
                let items = try Vocabulary(store: store).count
                if options.json {
                    print("{\"sessions\":\(sessions),\"items\":\(items)}")
                } else {
                    print("sessions \(sessions)\nitems    \(items)")
                }
            }
        }
    }
}
