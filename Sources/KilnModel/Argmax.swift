/// Index of the largest value (the first on ties).
public func argmax(_ values: [Float]) -> Int {
    values.withUnsafeBufferPointer(argmax)
}

/// Index of the largest value (the first on ties), in values where they lie (a backend's mapped logits).
public func argmax(_ values: UnsafeBufferPointer<Float>) -> Int {
    var best = 0
    for i in values.indices where values[i] > values[best] { best = i }
    return best
}
