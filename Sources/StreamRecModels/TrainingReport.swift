// The report written beside a trained snapshot: a Markdown table of the run and an SVG of the
// training loss and validation NDCG@10 per epoch.
import Foundation

public enum TrainingReport {
    public static func markdown(model: String, snapshot: String, settings: [String: String], history: [EpochRecord],
                                metrics: [String: Double], wallSeconds: Double) -> String {
        var out = "# Training report: \(model)\n\nSnapshot: `\(snapshot)`  \nWall time: \(String(format: "%.1f", wallSeconds)) s\n\n"
        out += "## Settings\n\n| key | value |\n|---|---|\n"
        for key in settings.keys.sorted() { out += "| \(key) | \(settings[key]!) |\n" }
        out += "\n## Result\n\n| metric | value |\n|---|---|\n"
        for key in metrics.keys.sorted() { out += "| \(key) | \(String(format: "%.4f", metrics[key]!)) |\n" }
        out += "\n## Epochs\n\n| epoch | loss | seconds | seq/s | val NDCG@10 | val HR@10 |\n|---|---|---|---|---|---|\n"
        for r in history {
            out += String(format: "| %d | %.4f | %.1f | %.0f | %@ | %@ |\n", r.epoch, r.loss, r.seconds, r.sequencesPerSecond,
                          r.validationNDCG10.map { String(format: "%.4f", $0) } ?? "", r.validationHR10.map { String(format: "%.4f", $0) } ?? "")
        }
        out += "\nCurves: `\(URL(fileURLWithPath: snapshot).lastPathComponent).report.svg`\n"
        return out
    }

    /// Two panels side by side: loss per epoch, validation NDCG@10 per validated epoch.
    public static func svg(title: String, history: [EpochRecord]) -> String {
        let width = 900.0, height = 350.0, panel = 400.0, top = 52.0, plotHeight = 250.0
        func polyline(_ points: [(Double, Double)], x0: Double, color: String, label: String) -> String {
            guard let minX = points.map(\.0).min(), let maxX = points.map(\.0).max(),
                  let minY = points.map(\.1).min(), let maxY = points.map(\.1).max() else {
                return "<text x=\"\(x0 + 20)\" y=\"\(top + 20)\" font-size=\"12\">\(label): no data</text>"
            }
            let spanX = max(maxX - minX, 1e-9), spanY = max(maxY - minY, 1e-9)
            let coords = points.map { p in
                String(format: "%.1f,%.1f", x0 + 40 + (p.0 - minX) / spanX * (panel - 60), top + plotHeight - (p.1 - minY) / spanY * plotHeight)
            }.joined(separator: " ")
            var s = "<rect x=\"\(x0 + 40)\" y=\"\(top)\" width=\"\(panel - 60)\" height=\"\(plotHeight)\" fill=\"none\" stroke=\"#ccc\"/>\n"
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(coords)\"/>\n"
            s += "<text x=\"\(x0 + 40)\" y=\"\(top - 8)\" font-size=\"13\">\(label)</text>\n"
            s += String(format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">%.4g</text>\n", x0, top + 10, maxY)
            s += String(format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">%.4g</text>\n", x0, top + plotHeight, minY)
            s += String(format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">epoch %.0f</text>\n", x0 + 40, top + plotHeight + 16, minX)
            s += String(format: "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\" text-anchor=\"end\">epoch %.0f</text>\n", x0 + panel - 20, top + plotHeight + 16, maxX)
            return s
        }
        let loss = history.map { (Double($0.epoch), $0.loss) }
        let ndcg = history.compactMap { r in r.validationNDCG10.map { (Double(r.epoch), $0) } }
        return """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif">
        <rect width="100%" height="100%" fill="white"/>
        <text x="20" y="20" font-size="15">\(title)</text>
        \(polyline(loss, x0: 10, color: "#d62728", label: "training loss"))
        \(polyline(ndcg, x0: 460, color: "#1f77b4", label: "validation NDCG@10"))
        </svg>

        """
    }
}
