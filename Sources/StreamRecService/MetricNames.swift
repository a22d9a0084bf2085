// Every metric StreamRec exports, in one place (names are an interface: dashboards use them).
import Foundation
import Metrics

public enum MetricNames {
    public static let eventsIn = "streamrec_events_in_total"                 // records consumed
    public static let eventsValid = "streamrec_events_valid_total"           // parsed interaction events
    public static let eventsDeadLettered = "streamrec_events_dlq_total"      // dimension: code
    public static let recommendationsOut = "streamrec_recommendations_out_total"
    public static let replayedWithoutOutput = "streamrec_events_rebuilt_total" // state rebuilt below the group's committed offset
    public static let endToEndLatency = "streamrec_end_to_end_latency_seconds" // record timestamp -> output delivered
    public static let inferenceLatency = "streamrec_inference_seconds"       // one model call per micro-batch
    public static let batchSize = "streamrec_batch_size"                     // records per micro-batch
    public static let partitionLag = "streamrec_partition_lag"               // dimension: partition
    public static let assignedPartitions = "streamrec_assigned_partitions"
    public static let deliveryRetries = "streamrec_delivery_retries_total"
    public static let rebalances = "streamrec_rebalances_total"
    public static let partitionsRevoked = "streamrec_partitions_revoked_total" // partitions given up (all of them per rebalance under an eager assignor, only those that move under cooperative-sticky)
    public static let sessionsExpired = "streamrec_sessions_expired_total"
    public static let consumerErrors = "streamrec_consumer_errors_total"
    public static let offsetGaps = "streamrec_offset_gaps_total"             // input records the broker skipped
    public static let modelReloads = "streamrec_model_reloads_total"         // dimension: result (ok, refused)
    public static let itemsEmbedded = "streamrec_items_embedded_total"       // item texts run through the encoder (cold-start path)
    public static let itemsAdded = "streamrec_items_added_total"             // new items made rankable without a new snapshot
    public static let itemsRejected = "streamrec_items_rejected_total"       // items-topic records that are not {"title", "extra"?}
    public static let pipelineStageSeconds = "streamrec_pipeline_stage_seconds_total" // dimension: stage (poll, parse, state, inference, encode, delivery, commit)
    public static let restoringPartitions = "streamrec_restoring_partitions" // partitions being restored from the changelog (not answering yet)
    public static let restoreRecords = "streamrec_restore_records_total"     // changelog records applied by restores and standbys
    public static let restoreSeconds = "streamrec_restore_seconds_total"
    public static let standbyPartitions = "streamrec_standby_partitions"
    public static let standbyLag = "streamrec_standby_lag"                   // dimension: partition; changelog records a standby is behind
    public static let changelogRecords = "streamrec_changelog_records_total" // session records, tombstones and markers written
    public static let transactions = "streamrec_transactions_total"          // dimension: result (committed, aborted)
    public static let outputMissing = "streamrec_output_missing"             // `streamrec audit`: input offsets with neither answer nor dead letter
    public static let auditChecked = "streamrec_audit_checked_total"         // `streamrec audit`: input offsets verified
    public static let auditDuplicates = "streamrec_audit_duplicates_total"   // `streamrec audit`: input offsets with more than one output record
    public static let openblasKernels = "streamrec_openblas_kernels"         // 1, dimensions: core, library_pick, source (library, verified, user)
}

/// The pipeline's instruments, made from a factory the caller passes in (no global bootstrap).
public final class PipelineMetrics: @unchecked Sendable {
    let factory: MetricsFactory
    let eventsIn: Counter
    let eventsValid: Counter
    let recommendationsOut: Counter
    let rebuilt: Counter
    let endToEnd: Timer
    let inference: Timer
    let batchSize: Recorder
    let assignedPartitions: Gauge
    let deliveryRetries: Counter
    let rebalances: Counter
    let partitionsRevoked: Counter
    let sessionsExpired: Counter
    let consumerErrors: Counter
    let offsetGaps: Counter
    let reloadsOK: Counter
    let reloadsRefused: Counter
    let itemsEmbedded: Counter
    let itemsAdded: Counter
    let itemsRejected: Counter
    let changelogRecords: Counter
    let transactionsCommitted: Counter
    let transactionsAborted: Counter
    private let restoringGauge: Gauge
    private let restoreRecordsCounter: Counter
    private let restoreSecondsCounter: FloatingPointCounter
    private let standbyGauge: Gauge
    private let stateLock = NSLock()
    private var restoringNow = 0
    private var dlq: [String: Counter] = [:]
    private var lag: [String: Gauge] = [:]
    private var standbyLag: [String: Gauge] = [:]

    public init(factory: MetricsFactory) {
        self.factory = factory
        eventsIn = Counter(label: MetricNames.eventsIn, factory: factory)
        eventsValid = Counter(label: MetricNames.eventsValid, factory: factory)
        recommendationsOut = Counter(label: MetricNames.recommendationsOut, factory: factory)
        rebuilt = Counter(label: MetricNames.replayedWithoutOutput, factory: factory)
        endToEnd = Timer(label: MetricNames.endToEndLatency, factory: factory)
        inference = Timer(label: MetricNames.inferenceLatency, factory: factory)
        batchSize = Recorder(label: MetricNames.batchSize, factory: factory)
        assignedPartitions = Gauge(label: MetricNames.assignedPartitions, factory: factory)
        deliveryRetries = Counter(label: MetricNames.deliveryRetries, factory: factory)
        rebalances = Counter(label: MetricNames.rebalances, factory: factory)
        partitionsRevoked = Counter(label: MetricNames.partitionsRevoked, factory: factory)
        sessionsExpired = Counter(label: MetricNames.sessionsExpired, factory: factory)
        consumerErrors = Counter(label: MetricNames.consumerErrors, factory: factory)
        offsetGaps = Counter(label: MetricNames.offsetGaps, factory: factory)
        reloadsOK = Counter(label: MetricNames.modelReloads, dimensions: [("result", "ok")], factory: factory)
        reloadsRefused = Counter(label: MetricNames.modelReloads, dimensions: [("result", "refused")], factory: factory)
        itemsEmbedded = Counter(label: MetricNames.itemsEmbedded, factory: factory)
        itemsAdded = Counter(label: MetricNames.itemsAdded, factory: factory)
        itemsRejected = Counter(label: MetricNames.itemsRejected, factory: factory)
        changelogRecords = Counter(label: MetricNames.changelogRecords, factory: factory)
        transactionsCommitted = Counter(label: MetricNames.transactions, dimensions: [("result", "committed")], factory: factory)
        transactionsAborted = Counter(label: MetricNames.transactions, dimensions: [("result", "aborted")], factory: factory)
        restoringGauge = Gauge(label: MetricNames.restoringPartitions, factory: factory)
        restoringGauge.record(0)
        restoreRecordsCounter = Counter(label: MetricNames.restoreRecords, factory: factory)
        restoreSecondsCounter = FloatingPointCounter(label: MetricNames.restoreSeconds, factory: factory)
        standbyGauge = Gauge(label: MetricNames.standbyPartitions, factory: factory)
        standbyGauge.record(0)
    }

    func restoring(_ delta: Int) {
        stateLock.lock(); restoringNow += delta; let n = restoringNow; stateLock.unlock()
        restoringGauge.record(n)
    }

    func restoredRecords(_ n: Int) { restoreRecordsCounter.increment(by: n) }
    func restoreSeconds(_ s: Double) { restoreSecondsCounter.increment(by: s) }
    func standbyPartitions(_ n: Int) { standbyGauge.record(n) }

    func setStandbyLag(partition: Int32, _ value: Int64) {
        let key = String(partition)
        if standbyLag[key] == nil {
            standbyLag[key] = Gauge(label: MetricNames.standbyLag, dimensions: [("partition", key)], factory: factory)
        }
        standbyLag[key]!.record(Double(value))
    }

    func clearStandbyLag(partition: Int32) {
        standbyLag.removeValue(forKey: String(partition))?.destroy()
    }

    /// The OpenBLAS kernels this process runs and why (streamrec doctor says more).
    public func recordKernels(core: String, libraryPick: String, source: String) {
        Gauge(label: MetricNames.openblasKernels, dimensions: [("core", core), ("library_pick", libraryPick), ("source", source)],
              factory: factory).record(1)
    }

    func modelReloaded(failed: Bool) { (failed ? reloadsRefused : reloadsOK).increment() }

    /// Called from the pipeline thread only.
    func deadLettered(_ code: Rejection.Code) {
        if dlq[code.rawValue] == nil {
            dlq[code.rawValue] = Counter(label: MetricNames.eventsDeadLettered, dimensions: [("code", code.rawValue)], factory: factory)
        }
        dlq[code.rawValue]!.increment()
    }

    /// Drops a partition's lag series when the partition leaves this instance (a stale value
    /// would read as lag nobody is working off).
    func clearLag(partition: Int32) {
        lag.removeValue(forKey: String(partition))?.destroy()
    }

    func setLag(partition: Int32, _ value: Int64) {
        let key = String(partition)
        if lag[key] == nil {
            lag[key] = Gauge(label: MetricNames.partitionLag, dimensions: [("partition", key)], factory: factory)
        }
        lag[key]!.record(Double(value))
    }
}
