// Where block `block` of weight row `row` is stored, in blocks, for a matrix of `blocksPerRow` blocks per row:
// rows come in groups of 64 (a workgroup's rows in either kernel family) with block b of all 64 side by side,
// so a workgroup streams one contiguous run per step. DeviceMatrix.blockIndex writes this layout.
uint weightBlockIndex(uint row, uint block, uint blocksPerRow) { return ((row >> 6) * blocksPerRow + block) * 64u + (row & 63u); }
