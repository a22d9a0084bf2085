import Foundation
import StreamRecModels

/// Progress lines on stderr, shared by `train` and `retrain`: one line rewritten in place on a
/// terminal, a plain line every `interval` seconds otherwise (a log file wants few).
struct ProgressPrinter: Sendable {
    let isTerminal = isatty(STDERR_FILENO) != 0
    /// Seconds between progress lines (SASRecTrainer.fit's progressInterval).
    var interval: Double { isTerminal ? 0.5 : 30 }

    /// A progress line (replaces the previous one on a terminal).
    func update(_ line: String) {
        FileHandle.standardError.write(Data((isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
    }

    /// A line that stays (clears a pending progress line first).
    func log(_ message: String) {
        FileHandle.standardError.write(Data(((isTerminal ? "\r\u{1B}[K" : "") + message + "\n").utf8))
    }

    /// SASRec training progress, as `train` has always printed it.
    func training(_ p: TrainingProgress) {
        update(String(format: "epoch %d/%d step %d/%d loss %.4f %.0f seq/s ETA %@", p.epoch, p.epochs, p.step, p.steps, p.loss,
                      p.sequencesPerSecond, formatDuration(p.eta)))
    }

    /// A bar for counted work: "label [#####-----] 50% 500/1000".
    func bar(_ label: String, done: Int, total: Int, width: Int = 30) {
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let filled = Int((fraction * Double(width)).rounded(.down))
        update("\(label) [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
               + String(format: "] %3.0f%% %d/%d", fraction * 100, done, total))
    }
}
