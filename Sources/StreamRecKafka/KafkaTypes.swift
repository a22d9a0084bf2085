// Public value types of the Kafka layer. Nothing here touches librdkafka.
import Foundation

/// One error type for the Kafka area: a code to branch on and a message that says what to do.
public struct KafkaError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case config          // a client property was rejected
        case create          // the client handle could not be created
        case produce         // a record could not be enqueued or delivered
        case consume         // subscribe / poll / assign failed
        case commit          // offset commit or committed-offset lookup failed
        case admin           // topic creation or description failed
        case timeout         // the broker did not answer in time
        case mock            // the in-process mock cluster failed
        case transaction     // a transactional call failed (see transactionAdvice)
    }
    /// What a failed transactional call asks of the caller (librdkafka's classification).
    public enum TransactionAdvice: Sendable {
        /// Call it again.
        case retry
        /// Abort the transaction, then run the batch again in a new one.
        case abort
        /// Fenced by a newer instance with the same transactional.id, or broken: stop.
        case fatal
    }
    public let code: Code
    public let message: String
    /// librdkafka's rd_kafka_resp_err_t, when one exists.
    public let brokerCode: Int32?
    /// Set for `.transaction` errors.
    public let transactionAdvice: TransactionAdvice?

    public init(_ code: Code, _ message: String, brokerCode: Int32? = nil, transactionAdvice: TransactionAdvice? = nil) {
        self.code = code
        self.message = message
        self.brokerCode = brokerCode
        self.transactionAdvice = transactionAdvice
    }

    public var description: String { "kafka \(code.rawValue) error: \(message)" }
}

public struct TopicPartition: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public static func < (a: TopicPartition, b: TopicPartition) -> Bool {
        (a.topic, a.partition) < (b.topic, b.partition)
    }
    public var description: String { "\(topic)[\(partition)]" }
}

public struct KafkaHeader: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public init(_ key: String, _ value: [UInt8]) {
        self.key = key
        self.value = value
    }
    public init(_ key: String, _ value: String) {
        self.init(key, Array(value.utf8))
    }
}

/// A record to produce. `partition == nil` lets the partitioner hash the key.
public struct KafkaRecord: Sendable {
    public var topic: String
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    public var partition: Int32?

    public init(topic: String, key: [UInt8]?, value: [UInt8]?, headers: [KafkaHeader] = [], partition: Int32? = nil) {
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.partition = partition
    }
}

/// A consumed record, copied out of librdkafka's memory.
public struct KafkaMessage: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [KafkaHeader]
    /// The record's timestamp (CreateTime unless the topic says LogAppendTime), in ms since the epoch.
    public var timestampMs: Int64?

    public init(topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?,
                headers: [KafkaHeader] = [], timestampMs: Int64? = nil) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestampMs = timestampMs
    }

    public var topicPartition: TopicPartition { TopicPartition(topic, partition) }

    public func header(_ key: String) -> [UInt8]? {
        headers.first(where: { $0.key == key })?.value
    }
}

/// Where a newly assigned partition starts.
public enum StartOffset: Sendable, Equatable {
    case offset(Int64)
    case beginning
    case end
    /// The group's committed offset, else `auto.offset.reset`.
    case committed
}

/// Called on the polling thread during `KafkaConsumer.poll` when the group rebalances.
public protocol PartitionAssignmentListener: AnyObject {
    /// Returns where each assigned partition starts.
    func partitionsAssigned(_ partitions: [TopicPartition], consumer: KafkaConsumer) -> [TopicPartition: StartOffset]
    /// `pending` holds messages of the revoked partitions fetched in the current poll but not yet
    /// handed out: process them now (the partitions are still owned until this returns).
    func partitionsRevoked(_ partitions: [TopicPartition], pending: [KafkaMessage], consumer: KafkaConsumer)
}

/// librdkafka's own log lines (broker connections, group and transaction events), as plain
/// values. The service routes them to swift-log once at start; until then, and in programs
/// that never route them, they go to stderr as librdkafka would print them.
public enum KafkaLogs {
    public struct Line: Sendable {
        /// Syslog severity: 0 emergency ... 3 error, 4 warning, 5 notice, 6 info, 7 debug.
        public let severity: Int
        /// librdkafka's facility, e.g. FAIL, REQTMOUT, TXNERR.
        public let facility: String
        /// The client's name, e.g. rdkafka#consumer-1.
        public let client: String
        public let message: String
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var handler: (@Sendable (Line) -> Void)?

    /// Sends every later line of every client to `handler` (called on librdkafka's threads);
    /// nil sends them to stderr again.
    public static func route(_ handler: (@Sendable (Line) -> Void)?) {
        lock.withLock { Self.handler = handler }
    }

    static func emit(_ line: Line) {
        if let handler = lock.withLock({ Self.handler }) {
            handler(line)
        } else {
            FileHandle.standardError.write(Data("%\(line.severity)|\(line.facility)|\(line.client)| \(line.message)\n".utf8))
        }
    }
}
