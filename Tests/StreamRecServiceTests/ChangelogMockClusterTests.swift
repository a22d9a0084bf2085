import Foundation
import Prometheus
import Testing
import StreamRecKafka
import StreamRecModels
import StreamRecStorage
@testable import StreamRecService

/// The sessions changelog, restores, standby replicas and exactly-once mode, on the mock cluster.
@Suite(.serialized) struct ChangelogMockClusterTests {
    static let training: [[String]] = (0..<60).map { u in (0..<20).map { "i\((u + $0) % 40)" } }
    static let t0: Int64 = 1_700_000_000_000

    static func json(_ user: String, _ item: String, _ ts: Int64) -> [UInt8] {
        Array(#"{"user":"\#(user)","item":"\#(item)","ts":\#(ts)}"#.utf8)
    }

    /// Events with distinct items (a replayed event shows as a duplicate), recording what each
    /// user's session must hold.
    static func events(_ range: Range<Int>, users: Int, into expected: inout [String: [String]], ts: (Int) -> Int64 = { t0 + Int64($0) })
        -> [(key: String?, value: [UInt8])] {
        range.map { n in
            let user = "u\(n % users)"
            let item = "x\(n)"
            expected[user, default: []].append(item)
            return (user, json(user, item, ts(n)))
        }
    }

    static func storedSessions(_ directory: String) throws -> [String: [String]] {
        let store = try KeyValueStore(path: directory)
        defer { store.close() }
        let vocabulary = try Vocabulary(store: store)
        let sessions = SessionStore(store: store, policy: SessionPolicy())
        var out: [String: [String]] = [:]
        try sessions.forEachSession { s in out[s.user] = s.items.map { vocabulary.external(for: $0)! } }
        return out
    }

    static func sources(_ messages: [KafkaMessage]) -> [String] {
        messages.map { m in "\(String(decoding: m.header("source-partition") ?? [], as: UTF8.self))@\(String(decoding: m.header("source-offset") ?? [], as: UTF8.self))" }
    }

    @Test func aPartitionMovedToAFreshInstanceIsRestoredFromTheChangelogNotReplayed() throws {
        let h = try MockClusterHarness(partitions: 3, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        try h.produce(Self.events(0..<600, users: 40, into: &expected))
        let first = try h.startService()
        _ = try h.read(h.output) { $0.count >= 600 }
        first.stop()

        // A new instance with an empty state directory takes every partition over.
        var config = h.config()
        config.state.directory = h.work.appendingPathComponent("state-b").path
        try h.produce(Self.events(600..<700, users: 40, into: &expected))
        let second = try h.startService(config: config)
        let all = try h.read(h.output) { $0.count >= 700 }
        #expect(second.metric("streamrec_events_rebuilt_total") == 0, "nothing replayed from the input")
        #expect((second.metric("streamrec_restore_records_total") ?? 0) > 0)
        #expect(second.metric("streamrec_restoring_partitions") == 0)
        second.stop()

        #expect(all.count == 700)
        #expect(Set(Self.sources(all)).count == 700, "every input answered once")
        #expect(try Self.storedSessions(config.state.directory) == expected)
    }

    @Test func localStateBehindTheChangelogCatchesUpAndResumesAfterIt() throws {
        // The same instance's LevelDB is copied aside mid-way: the copy is behind the changelog
        // like the state of a crash after delivery and before the LevelDB write.
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        try h.produce(Self.events(0..<200, users: 15, into: &expected))
        var service = try h.startService()
        _ = try h.read(h.output) { $0.count >= 200 }
        service.stop()
        let behind = h.work.appendingPathComponent("state-behind").path
        try FileManager.default.copyItem(atPath: h.stateDirectory, toPath: behind)

        try h.produce(Self.events(200..<400, users: 15, into: &expected))
        service = try h.startService()
        _ = try h.read(h.output) { $0.count >= 400 }
        service.stop()

        var config = h.config()
        config.state.directory = behind
        service = try h.startService(config: config)
        try h.produce(Self.events(400..<450, users: 15, into: &expected))
        let all = try h.read(h.output) { $0.count >= 450 }
        service.stop()
        #expect(all.count == 450, "events 200..<400 were not answered again")
        #expect(try Self.storedSessions(behind) == expected)
    }

    @Test func expiredSessionsLeaveTombstonesThatARestoreApplies() throws {
        let h = try MockClusterHarness(partitions: 1, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        var config = h.config()
        config.session.idleTTLMs = 1_000
        // Old users at t0, then, in later batches, other users an hour later: the old ones are swept.
        try h.produce(Self.events(0..<20, users: 5, into: &expected))
        let service = try h.startService(config: config)
        _ = try h.read(h.output) { $0.count >= 20 }
        try h.produce((0..<30).map { n in ("late\(n % 3)", Self.json("late\(n % 3)", "y\(n)", Self.t0 + 3_600_000 + Int64(n))) })
        _ = try h.read(h.output) { $0.count >= 50 }
        try h.produce([("late1", Self.json("late1", "y", Self.t0 + 3_600_050))])
        _ = try h.read(h.output) { $0.count >= 51 }
        service.stop()
        let changelog = try h.read(h.changelog) { ms in ms.contains { $0.value == nil } }
        let tombstoned = Set(changelog.filter { $0.value == nil }.compactMap { $0.key.map { String(decoding: $0, as: UTF8.self) } })
        #expect(!tombstoned.isEmpty && tombstoned.isSubset(of: Set((0..<5).map { "u\($0)" })))

        config.state.directory = h.work.appendingPathComponent("state-b").path
        let restored = try h.startService(config: config)
        try h.produce([("late0", Self.json("late0", "z", Self.t0 + 3_600_100))])
        _ = try h.read(h.output) { $0.count >= 52 }
        restored.stop()
        let sessions = try Self.storedSessions(config.state.directory)
        #expect(tombstoned.allSatisfy { sessions[$0] == nil })
        #expect(sessions["late0"]?.last == "z")
    }

    @Test func standbyKeepsAWarmCopyOfPartitionsOwnedElsewhere() throws {
        // Two instances, two partitions: each owns one and keeps the other warm.
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        var a = h.config()
        a.state.standbyReplicas = 1
        var b = a
        b.state.directory = h.work.appendingPathComponent("state-b").path
        let serviceA = try h.startService(config: a)
        let serviceB = try h.startService(config: b)
        // Both members own a partition before the events arrive.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !(serviceA.metric("streamrec_assigned_partitions") == 1 && serviceB.metric("streamrec_assigned_partitions") == 1) {
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(serviceA.metric("streamrec_standby_partitions") == 1)
        try h.produce(Self.events(0..<300, users: 30, into: &expected))
        _ = try h.read(h.output) { $0.count >= 300 }
        let caughtUp = Date().addingTimeInterval(30)
        while Date() < caughtUp,
              !(serviceA.metric("streamrec_standby_lag{partition=\"0\"}") == 0 || serviceA.metric("streamrec_standby_lag{partition=\"1\"}") == 0) {
            Thread.sleep(forTimeInterval: 0.2)
        }
        serviceA.stop()
        serviceB.stop()
        // A's store holds every session: its own partition's, and the standby copy of B's.
        #expect(try Self.storedSessions(a.state.directory) == expected)
    }

    /// An exactly-once instance "a" answers `range` (20 users) and stops; returns its config.
    static func servedExactlyOnce(_ h: MockClusterHarness, _ range: Range<Int>, into expected: inout [String: [String]]) throws -> StreamRecConfig {
        var config = h.config()
        config.delivery = .exactlyOnce
        config.kafka.instanceID = "a"
        try h.produce(Self.events(range, users: 20, into: &expected))
        let first = try h.startService(config: config)
        _ = try h.readCommitted(h.output) { $0.count >= range.count }
        first.stop()
        return config
    }

    @Test func exactlyOnceAnswersEachInputOnceThroughAbortedTransactionsAndMoves() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        let config = try Self.servedExactlyOnce(h, 0..<200, into: &expected)
        var first: RunningService

        // The restarted instance's produce requests fail for good (INVALID_RECORD, not
        // retriable): the transaction must abort, and the batch run again in a new one.
        try h.produce(Self.events(200..<300, users: 20, into: &expected))
        h.cluster.pushRequestErrors(apiKey: 0, errors: [87, 87, 87])
        first = try h.startService(config: config)
        _ = try h.readCommitted(h.output) { $0.count >= 300 }
        // Errors the service did not use up would fail whichever client produces next (the mock
        // cluster does not know whose request it fails): use them up on a scratch topic.
        for _ in 0..<4 {
            do { try h.produce([(nil, [1])], topic: "scratch-\(h.id)"); break } catch {}
        }
        #expect((first.metric("streamrec_transactions_total{result=\"aborted\"}") ?? 0) > 0)

        // A second instance joins; the partitions move between them mid-stream.
        var second = config
        second.kafka.instanceID = "b"
        second.state.directory = h.work.appendingPathComponent("state-b").path
        let other = try h.startService(config: second)
        try h.produce(Self.events(300..<500, users: 20, into: &expected))
        let committed = try h.readCommitted(h.output) { $0.count >= 500 }
        first.stop()
        try h.produce(Self.events(500..<600, users: 20, into: &expected))
        let aborted = (first.metric("streamrec_transactions_total{result=\"aborted\"}") ?? 0)
            + (other.metric("streamrec_transactions_total{result=\"aborted\"}") ?? 0)
        let all = try h.readCommitted(h.output) { Set(Self.sources($0)).count >= 600 }
        other.stop()
        #expect(committed.count >= 500)
        let sources = Self.sources(all)
        // Every input is answered. The mock cluster does not hide aborted transactions from a
        // read_committed reader (its Fetch lists none), so an aborted attempt's answers that the
        // broker stored before the failure are visible beside the committed retry's: extra
        // answers are allowed only when a transaction aborted. (Isolation itself is the broker's.)
        #expect(Set(sources).count == 600, "every input answered: \(Set(sources).count) distinct of 600")
        #expect(sources.count == 600 || aborted > 0, "\(sources.count) answers for 600 inputs without an aborted transaction")
        #expect(try Self.storedSessions(second.state.directory) == expected, "the instance left holds every session, restored from the changelog")
    }

    /// A deployment switched from exactly-once to at-least-once: the new instance restores the
    /// changelog written in transactions (its restore must end although the log's last offsets
    /// may be transaction markers, which no reader sees as records) and answers what follows.
    @Test func aSwitchFromExactlyOnceToAtLeastOnceRestoresAndAnswers() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        let config = try Self.servedExactlyOnce(h, 0..<200, into: &expected)

        var switched = h.config()
        switched.state.directory = h.work.appendingPathComponent("state-b").path
        switched.state.restoreTimeoutMs = 5_000
        try h.produce(Self.events(200..<260, users: 20, into: &expected))
        let second = try h.startService(config: switched)
        let all = try h.read(h.output) { Set(Self.sources($0)).count >= 260 }
        #expect(second.metric("streamrec_events_rebuilt_total") == 0, "restored, not replayed")
        second.stop()
        #expect(Set(Self.sources(all)).count == 260, "every input answered")
        #expect(try Self.storedSessions(switched.state.directory) == expected)
    }

    /// A second instance joins and leaves a running one under either assignor: every input is
    /// answered and every session exact. Under cooperative-sticky the first instance gives up only
    /// the partitions that move (2 of 4) and keeps answering the others through the rebalance;
    /// under range (eager) it gives up every partition it owns at each rebalance of the join (all
    /// 4 at the first; the mock cluster may run a second), then gets 2 back.
    @Test(arguments: KafkaClientConfig.Assignor.allCases)
    func aJoiningInstanceTakesOverPartitions(assignor: KafkaClientConfig.Assignor) throws {
        let h = try MockClusterHarness(partitions: 4, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        var a = h.config()
        a.kafka.assignor = assignor
        var b = a
        b.state.directory = h.work.appendingPathComponent("state-b").path
        try h.produce(Self.events(0..<300, users: 40, into: &expected))
        let first = try h.startService(config: a)
        _ = try h.read(h.output) { $0.count >= 300 }
        #expect(first.metric("streamrec_partitions_revoked_total") ?? 0 == 0)

        let second = try h.startService(config: b)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !(first.metric("streamrec_assigned_partitions") == 2 && second.metric("streamrec_assigned_partitions") == 2) {
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(first.metric("streamrec_assigned_partitions") == 2 && second.metric("streamrec_assigned_partitions") == 2)
        let revoked = first.metric("streamrec_partitions_revoked_total") ?? 0
        if assignor == .cooperativeSticky {
            #expect(revoked == 2, "only the partitions that moved")
        } else {
            // All 4 at the join's first rebalance, then whatever it owns at a second one (the mock
            // cluster may run one while this loop already saw 2 and 2): at least 4, never just 2.
            #expect(revoked >= 4, "every owned partition at each rebalance: \(revoked)")
        }
        try h.produce(Self.events(300..<600, users: 40, into: &expected))
        _ = try h.read(h.output) { Set(Self.sources($0)).count >= 600 }

        second.stop()   // leaves the group: its partitions come back to the first instance
        try h.produce(Self.events(600..<700, users: 40, into: &expected))
        let all = try h.read(h.output) { Set(Self.sources($0)).count >= 700 }
        first.stop()
        #expect(Set(Self.sources(all)).count == 700, "every input answered")
        #expect(try Self.storedSessions(a.state.directory) == expected, "the instance left holds every session")
    }

    @Test func theAuditFindsInputsWithoutAnswerAndCountsDuplicates() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        try h.produce(Self.events(0..<100, users: 10, into: &expected) + [("u1", Array("{broken".utf8))])
        let service = try h.startService()
        _ = try h.read(h.output) { $0.count >= 100 }
        service.stop()
        func audit() throws -> OutputAuditReport {
            let options = OutputAudit.Options(brokers: h.cluster.bootstrapServers, inputTopic: h.input, outputTopic: h.output, dlqTopic: h.dlq)
            return try OutputAudit(options: options, factory: PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()),
                                   logger: MockClusterHarness.logger).runOnce()
        }
        let clean = try audit()
        #expect(clean.missing == 0 && clean.duplicates == 0 && clean.outputRecords == 101)

        // Inputs nobody answered (no service runs), and an answer written twice.
        try h.produce(Self.events(100..<110, users: 10, into: &expected))
        let answers = try h.read(h.output) { $0.count >= 100 }
        try h.produce([(nil, answers[0].value!)], topic: h.output, headers: answers[0].headers)
        let report = try audit()
        #expect(report.missing == 10)
        #expect(report.duplicates == 1)
        #expect(report.partitions.flatMap(\.missingExamples).count == 10)
    }

    @Test func aBrokerOutageCountsAsConsumerErrors() throws {
        let h = try MockClusterHarness(partitions: 1, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        try h.produce(Self.events(0..<20, users: 5, into: &expected))
        let service = try h.startService()
        _ = try h.read(h.output) { $0.count >= 20 }
        #expect(service.metric("streamrec_consumer_errors_total") == 0)
        h.cluster.setBroker(1, up: false)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, (service.metric("streamrec_consumer_errors_total") ?? 0) == 0 { Thread.sleep(forTimeInterval: 0.2) }
        h.cluster.setBroker(1, up: true)
        #expect((service.metric("streamrec_consumer_errors_total") ?? 0) > 0, "the outage shows on /metrics")
        try h.produce(Self.events(20..<30, users: 5, into: &expected))
        _ = try h.read(h.output) { $0.count >= 30 }
        service.stop()
    }

    @Test func exactlyOnceNeedsAnInstanceID() throws {
        let h = try MockClusterHarness(partitions: 1, trainingSequences: Self.training)
        var config = h.config()
        config.delivery = .exactlyOnce
        let error = #expect(throws: ConfigError.self) { _ = try h.startService(config: config) }
        #expect(error?.key == "kafka.instance_id")
    }

    @Test func aChangelogWithAnotherPartitionCountIsRefused() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var config = h.config()
        config.kafka.changelogTopic = "bad-\(h.id)"
        try h.cluster.createTopic(config.kafka.changelogTopic, partitions: 3)
        let error = #expect(throws: ConfigError.self) { _ = try h.startService(config: config) }
        #expect(error?.key == "kafka.changelog_topic")
        #expect(error?.message.contains("co-partitioned") == true)
    }
}

/// The batch rules of a changelog partition, without Kafka.
@Suite struct ChangelogRecordTests {
    @Test func recordsRoundTripAndCorruptionIsNamed() throws {
        let records: [ChangelogRecord] = [
            .session(user: "ü-1", inputOffset: 42, lastSeenMs: -7, events: [.init(item: "item é", timestampMs: 1), .init(item: "", timestampMs: .max)]),
            .session(user: "b", inputOffset: 0, lastSeenMs: 0, events: []),
            .tombstone(user: "c"),
            .marker(nextInputOffset: 43),
        ]
        for r in records {
            #expect(try ChangelogRecord.decode(key: r.key, value: r.value, where: "t") == r)
        }
        let good = records[0].value!
        for bad in [Array(good.dropLast()), good + [0], [9] + good.dropFirst(), [UInt8]()] {
            let e = #expect(throws: StorageError.self) { _ = try ChangelogRecord.decode(key: Array("a".utf8), value: bad, where: "t[0]@5") }
            #expect(e?.code == .corrupt && e?.message.contains("t[0]@5") == true)
        }
        #expect(throws: StorageError.self) { _ = try ChangelogRecord.decode(key: ChangelogRecord.markerKey, value: [2, 1], where: "t") }
    }

    @Test func onlyBatchesClosedByAMarkerApplyAndRecordsPastTheMarkerAreDropped() {
        var replayer = ChangelogReplayer()
        func session(_ user: String, _ offset: Int64) -> ChangelogRecord {
            .session(user: user, inputOffset: offset, lastSeenMs: 0, events: [.init(item: "\(offset)", timestampMs: 0)])
        }
        #expect(replayer.feed(session("a", 0), offset: 0) == nil)
        let first = replayer.feed(.marker(nextInputOffset: 1), offset: 1)
        #expect(first?.records == [session("a", 0)] && first?.nextInputOffset == 1)
        // A batch cut short (no marker) covering inputs 1...4, then the same inputs answered again
        // as a shorter batch 1...2: b@3 and c@4 of the cut batch must not count.
        _ = replayer.feed(session("b", 3), offset: 2)
        _ = replayer.feed(session("c", 4), offset: 3)
        #expect(replayer.firstPendingOffset == 2)
        _ = replayer.feed(session("b", 2), offset: 4)
        let second = replayer.feed(.marker(nextInputOffset: 3), offset: 5)
        #expect(second?.records == [session("b", 2)] && second?.nextInputOffset == 3)
        #expect(replayer.firstPendingOffset == nil)
    }
}
