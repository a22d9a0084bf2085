// The only code in StreamRec that touches librdkafka pointers. Everything above it speaks
// Swift values (KafkaMessage, KafkaRecord, TopicPartition). One RDKafkaClient owns one rd_kafka_t.
import CRdKafka
import Foundation

final class RDKafkaClient: @unchecked Sendable {
    enum Kind { case producer, consumer }

    /// Rebalance events surfaced to Swift. Called on the thread that polls the consumer.
    enum RebalanceEvent {
        case assign([TopicPartition])
        case revoke([TopicPartition])
    }

    private let handle: OpaquePointer            // rd_kafka_t*
    let kind: Kind
    /// Set before the first poll; the C callbacks read them through the opaque pointer.
    var onRebalance: ((RebalanceEvent) -> [TopicPartition: StartOffset])?
    var onDelivery: ((_ token: Int, _ delivered: (partition: Int32, offset: Int64)?, _ error: KafkaError?) -> Void)?
    private var closed = false
    /// Failures inside the rebalance callback (which cannot throw) and client errors from the
    /// error callback, returned by the next consumerPoll on the same thread; a fatal one stops
    /// the consumer's owner.
    private var rebalanceFailures: [(error: KafkaError, fatal: Bool)] = []

    init(kind: Kind, properties: [String: String]) throws(KafkaError) {
        self.kind = kind
        let conf = rd_kafka_conf_new()
        var errstr = [CChar](repeating: 0, count: 512)
        for (key, value) in properties.sorted(by: { $0.key < $1.key }) {
            let result = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
            if result != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                throw KafkaError(.config, "librdkafka property '\(key)=\(value)' rejected: \(Self.string(errstr)). Check the property name and value against librdkafka's CONFIGURATION.md.")
            }
        }
        // The opaque must point at self, which does not exist yet: use a box filled in below.
        let box = OpaqueBox()
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(box).toOpaque())
        // librdkafka's log lines go where the program routes them (swift-log in the service).
        rd_kafka_conf_set_log_cb(conf) { rk, level, facility, message in
            KafkaLogs.emit(.init(severity: Int(level), facility: facility.map { String(cString: $0) } ?? "",
                                 client: rk.map { String(cString: rd_kafka_name($0)) } ?? "",
                                 message: message.map { String(cString: $0) } ?? ""))
        }
        switch kind {
        case .consumer:
            // Client-level errors (all brokers down, transport failures) reach the consumer's
            // owner as poll errors (counted and logged there) instead of only librdkafka's log.
            // Served by consumer_poll, on the polling thread.
            rd_kafka_conf_set_error_cb(conf) { _, err, reason, opaque in
                guard let opaque else { return }
                let client = Unmanaged<OpaqueBox>.fromOpaque(opaque).takeUnretainedValue().client
                let code = rd_kafka_resp_err_t(rawValue: err)
                let text = "\(RDKafkaClient.describe(code)): \(reason.map { String(cString: $0) } ?? "")"
                client?.rebalanceFailures.append((KafkaError(.consume, text, brokerCode: err), code == RD_KAFKA_RESP_ERR__FATAL))
            }
            rd_kafka_conf_set_rebalance_cb(conf) { rk, err, partitions, opaque in
                guard let opaque, let partitions else { return }
                let client = Unmanaged<OpaqueBox>.fromOpaque(opaque).takeUnretainedValue().client
                client?.handleRebalance(rk: rk, err: err, partitions: partitions)
            }
        case .producer:
            rd_kafka_conf_set_dr_msg_cb(conf) { _, message, opaque in
                guard let opaque, let message else { return }
                let client = Unmanaged<OpaqueBox>.fromOpaque(opaque).takeUnretainedValue().client
                let token = Int(bitPattern: message.pointee._private)
                let err = message.pointee.err
                let error: KafkaError? = err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil :
                    KafkaError(.produce, "delivery failed: \(String(cString: rd_kafka_err2str(err)))", brokerCode: err.rawValue)
                client?.onDelivery?(token, error == nil ? (message.pointee.partition, message.pointee.offset) : nil, error)
            }
        }
        let type = kind == .consumer ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER
        guard let rk = rd_kafka_new(type, conf, &errstr, errstr.count) else {
            // rd_kafka_new frees conf only on success.
            rd_kafka_conf_destroy(conf)
            throw KafkaError(.create, "could not create the Kafka \(kind == .consumer ? "consumer" : "producer"): \(Self.string(errstr))")
        }
        self.handle = rk
        self.opaqueBox = box
        box.client = self
        if kind == .consumer {
            // Route all events (messages, rebalances) to the consumer queue served by consumer_poll.
            rd_kafka_poll_set_consumer(rk)
        }
    }

    private let opaqueBox: OpaqueBox

    deinit {
        destroy()
    }

    func destroy() {
        guard !closed else { return }
        closed = true
        opaqueBox.client = nil
        rd_kafka_destroy(handle)
    }

    var name: String { String(cString: rd_kafka_name(handle)) }

    // MARK: consumer

    func subscribe(_ topics: [String]) throws(KafkaError) {
        let list = rd_kafka_topic_partition_list_new(Int32(topics.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for topic in topics {
            rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA)
        }
        let err = rd_kafka_subscribe(handle, list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.consume, "subscribe to \(topics) failed: \(Self.describe(err))", brokerCode: err.rawValue)
        }
    }

    enum Polled {
        case message(KafkaMessage)
        case error(KafkaError, fatal: Bool)
    }

    /// One message, an error, or nil on timeout. Serves rebalance callbacks.
    func consumerPoll(timeoutMs: Int32) -> Polled? {
        if !rebalanceFailures.isEmpty { let f = rebalanceFailures.removeFirst(); return .error(f.error, fatal: f.fatal) }
        let polled = rd_kafka_consumer_poll(handle, timeoutMs)
        // A rebalance inside this poll that failed comes first: the record (not yet processed,
        // so not committed) is fetched again by whoever owns its partition next.
        if !rebalanceFailures.isEmpty {
            if let polled { rd_kafka_message_destroy(polled) }
            let f = rebalanceFailures.removeFirst()
            return .error(f.error, fatal: f.fatal)
        }
        guard let msg = polled else { return nil }
        defer { rd_kafka_message_destroy(msg) }
        let m = msg.pointee
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF { return nil }
            var fatal = false
            if m.err == RD_KAFKA_RESP_ERR__FATAL {
                fatal = true
            }
            let text = Self.describe(m.err) + (m.rkt != nil ? " (\(String(cString: rd_kafka_topic_name(m.rkt))))" : "")
            return .error(KafkaError(.consume, text, brokerCode: m.err.rawValue), fatal: fatal)
        }
        return .message(Self.copyMessage(msg))
    }

    private static func copyMessage(_ msg: UnsafeMutablePointer<rd_kafka_message_t>) -> KafkaMessage {
        let m = msg.pointee
        let topic = String(cString: rd_kafka_topic_name(m.rkt))
        let key: [UInt8]? = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value: [UInt8]? = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) }
        var headers: [KafkaHeader] = []
        var hdrs: OpaquePointer?
        if rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR, let hdrs {
            var index = 0
            var name: UnsafePointer<CChar>?
            var val: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(hdrs, index, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                let bytes = val.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                headers.append(KafkaHeader(name.map { String(cString: $0) } ?? "", bytes))
                index += 1
            }
        }
        var tsType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(msg, &tsType)
        return KafkaMessage(topic: topic, partition: m.partition, offset: m.offset, key: key, value: value,
                            headers: headers, timestampMs: ts >= 0 ? ts : nil)
    }

    private func handleRebalance(rk: OpaquePointer?, err: rd_kafka_resp_err_t,
                                 partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let tps = Self.topicPartitions(partitions)
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            let starts = onRebalance?(.assign(tps)) ?? [:]
            let list = partitions.pointee
            for i in 0..<Int(list.cnt) {
                let tp = TopicPartition(String(cString: list.elems[i].topic), list.elems[i].partition)
                switch starts[tp] ?? .committed {
                case .offset(let o): list.elems[i].offset = o
                case .beginning: list.elems[i].offset = Int64(RD_KAFKA_OFFSET_BEGINNING)
                case .end: list.elems[i].offset = Int64(RD_KAFKA_OFFSET_END)
                case .committed: list.elems[i].offset = Int64(RD_KAFKA_OFFSET_STORED)
                }
            }
            if let failure = Self.assignChecked(handle, partitions) {
                // Consuming on without the assignment would leave these partitions unanswered.
                rebalanceFailures.append((KafkaError(.consume, "assigning \(tps.map(\.description).joined(separator: ", ")) failed: \(failure)"), true))
            }
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            // Give up the assignment after the listener drained and committed.
            _ = onRebalance?(.revoke(tps))
            if let failure = Self.unassignChecked(handle, partitions) {
                rebalanceFailures.append((KafkaError(.consume, "giving up \(tps.map(\.description).joined(separator: ", ")) failed: \(failure)"), true))
            }
        default:
            // A rebalance error: librdkafka asks the application to drop its assignment, which
            // the listener sees as a revoke (it drains and commits); the error itself is reported
            // (consumer errors metric, log), not hidden.
            rebalanceFailures.append((KafkaError(.consume, "rebalance error: \(Self.describe(err)); partitions \(tps.map(\.description).joined(separator: ", ")) given up until the group rebalances", brokerCode: err.rawValue), false))
            _ = onRebalance?(.revoke(tps))
            if let failure = Self.unassignChecked(handle, partitions) {
                rebalanceFailures.append((KafkaError(.consume, "giving up the assignment after a rebalance error failed: \(failure)"), true))
            }
        }
    }

    /// Gives up these partitions: all of them under an eager assignor, only these under the
    /// cooperative one (which revokes incrementally). Returns why it failed, or nil.
    private static func unassignChecked(_ rk: OpaquePointer, _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> String? {
        if rd_kafka_rebalance_protocol(rk).map({ String(cString: $0) }) == "COOPERATIVE" {
            guard let e = rd_kafka_incremental_unassign(rk, list) else { return nil }
            defer { rd_kafka_error_destroy(e) }
            return String(cString: rd_kafka_error_string(e))
        }
        return assignChecked(rk, nil)
    }

    /// Applies an assignment (nil: none); returns why it failed, or nil.
    private static func assignChecked(_ rk: OpaquePointer, _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) -> String? {
        // A cooperative assignor (kafka.assignor's default) changes the assignment incrementally.
        if rd_kafka_rebalance_protocol(rk).map({ String(cString: $0) }) == "COOPERATIVE" {
            guard let list else { return nil }
            guard let e = rd_kafka_incremental_assign(rk, list) else { return nil }
            defer { rd_kafka_error_destroy(e) }
            return String(cString: rd_kafka_error_string(e))
        }
        let err = rd_kafka_assign(rk, list)
        return err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : describe(err)
    }

    /// Manual assignment (no group membership): each partition starts where `starts` says.
    func assign(_ starts: [TopicPartition: StartOffset]) throws(KafkaError) {
        let list = Self.makeList(starts.sorted { $0.key < $1.key }.map { tp, start in
            switch start {
            case .offset(let o): return (tp, o)
            case .beginning: return (tp, Int64(RD_KAFKA_OFFSET_BEGINNING))
            case .end: return (tp, Int64(RD_KAFKA_OFFSET_END))
            case .committed: return (tp, Int64(RD_KAFKA_OFFSET_STORED))
            }
        })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_assign(handle, starts.isEmpty ? nil : list)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.consume, "assign \(starts.keys.sorted().map(\.description)) failed: \(Self.describe(err))", brokerCode: err.rawValue)
        }
    }

    /// Committed offsets of the group for these partitions; partitions with none are omitted.
    func committed(_ partitions: [TopicPartition], timeoutMs: Int32) throws(KafkaError) -> [TopicPartition: Int64] {
        let list = Self.makeList(partitions.map { ($0, Int64(RD_KAFKA_OFFSET_INVALID)) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_committed(handle, list, Int32(timeoutMs))
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.commit, "reading committed offsets failed: \(Self.describe(err))", brokerCode: err.rawValue)
        }
        var result: [TopicPartition: Int64] = [:]
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i]
            if e.err == RD_KAFKA_RESP_ERR_NO_ERROR && e.offset >= 0 {
                result[TopicPartition(String(cString: e.topic), e.partition)] = e.offset
            }
        }
        return result
    }

    func commit(_ offsets: [TopicPartition: Int64], async: Bool) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let list = Self.makeList(offsets.map { ($0.key, $0.value) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_commit(handle, list, async ? 1 : 0)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET {
            throw KafkaError(.commit, "offset commit failed: \(Self.describe(err))", brokerCode: err.rawValue)
        }
    }

    /// The last known (low, high) watermarks from fetch responses; no broker round trip.
    func cachedWatermarks(_ tp: TopicPartition) -> (low: Int64, high: Int64)? {
        var low: Int64 = -1
        var high: Int64 = -1
        let err = rd_kafka_get_watermark_offsets(handle, tp.topic, tp.partition, &low, &high)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, high >= 0 else { return nil }
        return (low, high)
    }

    func queryWatermarks(_ tp: TopicPartition, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        var low: Int64 = -1
        var high: Int64 = -1
        let err = rd_kafka_query_watermark_offsets(handle, tp.topic, tp.partition, &low, &high, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.consume, "watermarks of \(tp) unavailable: \(Self.describe(err))", brokerCode: err.rawValue)
        }
        return (low, high)
    }

    /// For each partition, the earliest offset whose record timestamp is >= the given time (ms);
    /// -1 when no record is that late (the caller reads nothing, or from the end).
    func offsetsForTimes(_ times: [TopicPartition: Int64], timeoutMs: Int32) throws(KafkaError) -> [TopicPartition: Int64] {
        guard !times.isEmpty else { return [:] }
        let list = Self.makeList(times.map { ($0.key, $0.value) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        let err = rd_kafka_offsets_for_times(handle, list, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.consume, "offsets for times unavailable: \(Self.describe(err))", brokerCode: err.rawValue)
        }
        var result: [TopicPartition: Int64] = [:]
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i]
            if e.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw KafkaError(.consume, "offset for time of \(String(cString: e.topic))[\(e.partition)] unavailable: \(Self.describe(e.err))", brokerCode: e.err.rawValue)
            }
            result[TopicPartition(String(cString: e.topic), e.partition)] = e.offset
        }
        return result
    }

    func assignment() -> [TopicPartition] {
        var list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?
        guard rd_kafka_assignment(handle, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return [] }
        defer { rd_kafka_topic_partition_list_destroy(list) }
        return Self.topicPartitions(list)
    }

    /// Leaves the group (triggers the revoke callback on this thread) and stops fetching.
    func consumerClose() {
        _ = rd_kafka_consumer_close(handle)
    }

    // MARK: producer

    /// Enqueues one record; `token` comes back in the delivery report.
    func produce(_ record: KafkaRecord, token: Int) throws(KafkaError) {
        var headers: OpaquePointer? = nil
        if !record.headers.isEmpty {
            headers = rd_kafka_headers_new(record.headers.count)
            for h in record.headers {
                h.value.withUnsafeBytes { buf in
                    _ = rd_kafka_header_add(headers, h.key, -1, buf.baseAddress, buf.count)
                }
            }
        }
        let key = record.key ?? []
        let value = record.value ?? []
        let hasKey = record.key != nil
        let hasValue = record.value != nil
        let error: OpaquePointer? = record.topic.withCString { topic in
            key.withUnsafeBytes { keyBuf in
                value.withUnsafeBytes { valueBuf in
                    var vus = [rd_kafka_vu_t](repeating: rd_kafka_vu_t(), count: 7)
                    var n = 0
                    vus[n].vtype = RD_KAFKA_VTYPE_TOPIC; vus[n].u.cstr = topic; n += 1
                    vus[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS; vus[n].u.i = RD_KAFKA_MSG_F_COPY; n += 1
                    vus[n].vtype = RD_KAFKA_VTYPE_OPAQUE; vus[n].u.ptr = UnsafeMutableRawPointer(bitPattern: token); n += 1
                    if hasKey {
                        vus[n].vtype = RD_KAFKA_VTYPE_KEY
                        vus[n].u.mem.ptr = UnsafeMutableRawPointer(mutating: keyBuf.baseAddress)
                        vus[n].u.mem.size = keyBuf.count; n += 1
                    }
                    if hasValue {
                        vus[n].vtype = RD_KAFKA_VTYPE_VALUE
                        // An empty value still needs a non-null pointer to be distinct from null.
                        vus[n].u.mem.ptr = UnsafeMutableRawPointer(mutating: valueBuf.baseAddress ?? UnsafeRawPointer(keyBuf.baseAddress) ?? UnsafeRawPointer(bitPattern: 1))
                        vus[n].u.mem.size = valueBuf.count; n += 1
                    }
                    if let p = record.partition {
                        vus[n].vtype = RD_KAFKA_VTYPE_PARTITION; vus[n].u.i32 = p; n += 1
                    }
                    if let headers {
                        vus[n].vtype = RD_KAFKA_VTYPE_HEADERS; vus[n].u.headers = headers; n += 1
                    }
                    return rd_kafka_produceva(handle, vus, n)
                }
            }
        }
        if let error {
            let code = rd_kafka_error_code(error)
            let text = String(cString: rd_kafka_error_string(error))
            rd_kafka_error_destroy(error)
            if let headers { rd_kafka_headers_destroy(headers) }
            throw KafkaError(.produce, "could not enqueue a record for '\(record.topic)': \(text)", brokerCode: code.rawValue)
        }
    }

    /// Serves delivery reports (and other callbacks) for up to `timeoutMs`.
    @discardableResult
    func poll(timeoutMs: Int32) -> Int32 {
        rd_kafka_poll(handle, timeoutMs)
    }

    /// Waits until every enqueued record was delivered or failed, or the timeout passed.
    func flush(timeoutMs: Int32) -> Bool {
        rd_kafka_flush(handle, timeoutMs) == RD_KAFKA_RESP_ERR_NO_ERROR
    }

    var outQueueLength: Int32 { rd_kafka_outq_len(handle) }

    // MARK: transactions (exactly-once mode)

    /// Runs one transactional call; its rd_kafka_error_t becomes a KafkaError that says whether
    /// to retry the call, abort the transaction, or stop (fenced or fatal).
    private func transactional(_ what: String, _ call: () -> OpaquePointer?) throws(KafkaError) {
        guard let e = call() else { return }
        defer { rd_kafka_error_destroy(e) }
        let advice: KafkaError.TransactionAdvice = rd_kafka_error_is_fatal(e) != 0 ? .fatal
            : rd_kafka_error_txn_requires_abort(e) != 0 ? .abort
            : rd_kafka_error_is_retriable(e) != 0 ? .retry : .fatal
        let code = rd_kafka_error_code(e)
        throw KafkaError(.transaction, "\(what): \(String(cString: rd_kafka_error_string(e)))", brokerCode: code.rawValue, transactionAdvice: advice)
    }

    func initTransactions(timeoutMs: Int32) throws(KafkaError) {
        try transactional("initialising transactions") { rd_kafka_init_transactions(handle, timeoutMs) }
    }

    func beginTransaction() throws(KafkaError) {
        try transactional("beginning a transaction") { rd_kafka_begin_transaction(handle) }
    }

    /// Adds the consumer's next offsets to the open transaction, fenced by the consumer's group
    /// generation (KIP-447): a zombie that lost its partitions cannot commit them.
    func sendOffsetsToTransaction(_ offsets: [TopicPartition: Int64], consumer: RDKafkaClient, timeoutMs: Int32) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let list = Self.makeList(offsets.map { ($0.key, $0.value) })
        defer { rd_kafka_topic_partition_list_destroy(list) }
        guard let metadata = rd_kafka_consumer_group_metadata(consumer.handle) else {
            throw KafkaError(.transaction, "the consumer has no group metadata (not subscribed?)", transactionAdvice: .fatal)
        }
        defer { rd_kafka_consumer_group_metadata_destroy(metadata) }
        try transactional("sending offsets to the transaction") { rd_kafka_send_offsets_to_transaction(handle, list, metadata, timeoutMs) }
    }

    func commitTransaction(timeoutMs: Int32) throws(KafkaError) {
        try transactional("committing the transaction") { rd_kafka_commit_transaction(handle, timeoutMs) }
    }

    func abortTransaction(timeoutMs: Int32) throws(KafkaError) {
        try transactional("aborting the transaction") { rd_kafka_abort_transaction(handle, timeoutMs) }
    }

    /// A fatal client error (e.g. idempotent producer fenced), if one was raised.
    func fatalError() -> KafkaError? {
        var errstr = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(handle, &errstr, errstr.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        return KafkaError(.produce, "fatal client error: \(Self.string(errstr))", brokerCode: err.rawValue)
    }

    // MARK: metadata and admin

    /// Partition count of each existing topic (nil for a topic the cluster does not have).
    func partitionCounts(_ topics: [String], timeoutMs: Int32) throws(KafkaError) -> [String: Int] {
        var md: UnsafePointer<rd_kafka_metadata>?
        let err = rd_kafka_metadata(handle, 1, nil, &md, timeoutMs)
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR, let md else {
            throw KafkaError(.timeout, "cluster metadata unavailable: \(Self.describe(err)). Is the broker list right and reachable?", brokerCode: err.rawValue)
        }
        defer { rd_kafka_metadata_destroy(md) }
        var result: [String: Int] = [:]
        let wanted = Set(topics)
        for i in 0..<Int(md.pointee.topic_cnt) {
            let t = md.pointee.topics[i]
            let name = String(cString: t.topic)
            if wanted.contains(name) && t.err == RD_KAFKA_RESP_ERR_NO_ERROR {
                result[name] = Int(t.partition_cnt)
            }
        }
        return result
    }

    struct NewTopic {
        var name: String
        var partitions: Int
        var replication: Int
        var config: [String: String]
    }

    /// Creates topics; returns per-topic error text (nil = created). "Already exists" counts as an error here.
    func createTopics(_ topics: [NewTopic], timeoutMs: Int32) throws(KafkaError) -> [String: (code: Int32, message: String)?] {
        var errstr = [CChar](repeating: 0, count: 512)
        var handles: [OpaquePointer?] = []
        defer { for h in handles { rd_kafka_NewTopic_destroy(h) } }
        for t in topics {
            guard let nt = rd_kafka_NewTopic_new(t.name, Int32(t.partitions), Int32(t.replication), &errstr, errstr.count) else {
                throw KafkaError(.admin, "topic '\(t.name)' spec rejected: \(Self.string(errstr))")
            }
            handles.append(nt)
            for (k, v) in t.config.sorted(by: { $0.key < $1.key }) {
                let err = rd_kafka_NewTopic_set_config(nt, k, v)
                if err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    throw KafkaError(.admin, "topic '\(t.name)' config \(k)=\(v) rejected: \(Self.describe(err))")
                }
            }
        }
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMs, &errstr, errstr.count)
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count)
        handles.withUnsafeMutableBufferPointer { buf in
            rd_kafka_CreateTopics(handle, buf.baseAddress, buf.count, options, queue)
        }
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 2000) else {
            throw KafkaError(.timeout, "CreateTopics got no answer in \(timeoutMs) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.admin, "CreateTopics failed: \(String(cString: rd_kafka_event_error_string(event)))",
                             brokerCode: rd_kafka_event_error(event).rawValue)
        }
        guard let res = rd_kafka_event_CreateTopics_result(event) else {
            throw KafkaError(.admin, "CreateTopics returned an unexpected event")
        }
        var count = 0
        let results = rd_kafka_CreateTopics_result_topics(res, &count)
        var out: [String: (code: Int32, message: String)?] = [:]
        for i in 0..<count {
            let r = results![i]
            let name = String(cString: rd_kafka_topic_result_name(r))
            let err = rd_kafka_topic_result_error(r)
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                out[name] = .some(nil)
            } else {
                let msg = rd_kafka_topic_result_error_string(r).map { String(cString: $0) } ?? Self.describe(err)
                out[name] = (err.rawValue, msg)
            }
        }
        return out
    }

    /// Current values of topic configs (only the named keys).
    func describeTopicConfigs(_ topic: String, keys: [String], timeoutMs: Int32) throws(KafkaError) -> [String: String] {
        var errstr = [CChar](repeating: 0, count: 512)
        let resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic)
        defer { rd_kafka_ConfigResource_destroy(resource) }
        let queue = rd_kafka_queue_new(handle)
        defer { rd_kafka_queue_destroy(queue) }
        let options = rd_kafka_AdminOptions_new(handle, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count)
        var resources: [OpaquePointer?] = [resource]
        resources.withUnsafeMutableBufferPointer { buf in
            rd_kafka_DescribeConfigs(handle, buf.baseAddress, 1, options, queue)
        }
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 2000) else {
            throw KafkaError(.timeout, "DescribeConfigs got no answer in \(timeoutMs) ms")
        }
        defer { rd_kafka_event_destroy(event) }
        if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.admin, "DescribeConfigs failed: \(String(cString: rd_kafka_event_error_string(event)))")
        }
        guard let res = rd_kafka_event_DescribeConfigs_result(event) else { return [:] }
        var rcount = 0
        guard let rs = rd_kafka_DescribeConfigs_result_resources(res, &rcount), rcount > 0 else { return [:] }
        var ccount = 0
        guard let entries = rd_kafka_ConfigResource_configs(rs[0], &ccount) else { return [:] }
        let wanted = Set(keys)
        var out: [String: String] = [:]
        for i in 0..<ccount {
            let e = entries[i]
            let name = String(cString: rd_kafka_ConfigEntry_name(e))
            if wanted.contains(name), let v = rd_kafka_ConfigEntry_value(e) {
                out[name] = String(cString: v)
            }
        }
        return out
    }

    // MARK: mock cluster

    /// Starts librdkafka's in-process mock cluster on loopback ports, owned by this client.
    func newMockCluster(brokers: Int) throws(KafkaError) -> MockClusterHandle {
        guard let mc = rd_kafka_mock_cluster_new(handle, Int32(brokers)) else {
            throw KafkaError(.mock, "could not start the in-process mock cluster")
        }
        return MockClusterHandle(pointer: mc)
    }

    // MARK: helpers

    static func string(_ buf: [CChar]) -> String {
        buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    static func describe(_ err: rd_kafka_resp_err_t) -> String {
        "\(String(cString: rd_kafka_err2name(err))): \(String(cString: rd_kafka_err2str(err)))"
    }

    static func makeList(_ entries: [(TopicPartition, Int64)]) -> UnsafeMutablePointer<rd_kafka_topic_partition_list_t> {
        let list = rd_kafka_topic_partition_list_new(Int32(max(entries.count, 1)))!
        for (tp, offset) in entries {
            let e = rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)!
            e.pointee.offset = offset
        }
        return list
    }

    static func topicPartitions(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [TopicPartition] {
        (0..<Int(list.pointee.cnt)).map { i in
            TopicPartition(String(cString: list.pointee.elems[i].topic), list.pointee.elems[i].partition)
        }
    }
}

/// Lets the C callbacks find their client without a retain cycle.
private final class OpaqueBox: @unchecked Sendable {
    weak var client: RDKafkaClient?
}

/// librdkafka's mock cluster. Lives as long as the client that created it.
final class MockClusterHandle: @unchecked Sendable {
    private let pointer: OpaquePointer
    init(pointer: OpaquePointer) { self.pointer = pointer }

    var bootstrapServers: String { String(cString: rd_kafka_mock_cluster_bootstraps(pointer)) }

    func createTopic(_ name: String, partitions: Int, replication: Int) throws(KafkaError) {
        let err = rd_kafka_mock_topic_create(pointer, name, Int32(partitions), Int32(replication))
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(.mock, "mock topic '\(name)' not created: \(RDKafkaClient.describe(err))")
        }
    }

    func setBroker(_ id: Int32, up: Bool) {
        if up { _ = rd_kafka_mock_broker_set_up(pointer, id) } else { _ = rd_kafka_mock_broker_set_down(pointer, id) }
    }

    /// The next requests of this API key (Kafka protocol number) fail with these errors, in order.
    func pushRequestErrors(apiKey: Int16, errors: [Int32]) {
        let codes = errors.map { rd_kafka_resp_err_t(rawValue: $0) }
        codes.withUnsafeBufferPointer { _ = rd_kafka_mock_push_request_errors_array(pointer, apiKey, codes.count, $0.baseAddress) }
    }

    func destroy() { rd_kafka_mock_cluster_destroy(pointer) }
}

/// The librdkafka this process loaded (it may differ from the headers built against: ops/broker.sh
/// runs 2.16 through LD_LIBRARY_PATH).
public enum KafkaLibrary {
    public static var version: String { String(cString: rd_kafka_version_str()) }
}
