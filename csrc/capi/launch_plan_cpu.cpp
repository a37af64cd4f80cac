// C exports of the launch planners (dlk/launch_plan.h) from libdlk_cpu.so, so that tests can check
// the CUDA launchers' index widths and launch splits on shapes no CPU machine could allocate.
// Chunked plans write chunk i's first item and size to firsts[i] / sizes[i] for i < capacity and
// return the number of chunks (call with capacity 0 to size the arrays), or -1 when no valid plan
// exists (the launcher then refuses the call).
#include "dlk/launch_plan.h"

#include "common.h"
#include "pool2d_params.h"

namespace {

int64_t write_chunks(const dlk::plan::Chunks& chunks, int64_t* firsts, int64_t* sizes, int64_t capacity) {
  for (int64_t i = 0; i < chunks.launches && i < capacity; ++i) {
    firsts[i] = chunks.first(i);
    sizes[i] = chunks.size(i);
  }
  return chunks.launches;
}

}  // namespace

DLK_API int dlk_plan_fits_int32(int64_t largest, int64_t overshoot) {
  return dlk::plan::fits_int32(largest, overshoot) ? 1 : 0;
}

// balanced = 0: chunks_of_at_most(count, limit); 1: chunks_of_about(count, limit chunks).
DLK_API int64_t dlk_plan_chunks(int64_t count, int64_t limit, int balanced, int64_t* firsts, int64_t* sizes,
                                int64_t capacity) {
  const dlk::plan::Chunks chunks =
      balanced ? dlk::plan::chunks_of_about(count, limit) : dlk::plan::chunks_of_at_most(count, limit);
  return chunks.valid() ? write_chunks(chunks, firsts, sizes, capacity) : -1;
}

// plan[0..4] = index bits, work items, blocks, threads per block, grid stride exact (0/1).
DLK_API int dlk_plan_pool2d(DLK_POOL2D_GEOMETRY_ARGS, int backward, int vec, int threads, int64_t max_blocks,
                            int64_t* plan) {
  dlk::Pool2dParams p;
  if (!dlk::capi::fill_pool2d_geometry(p, "dlk_plan_pool2d", DLK_POOL2D_GEOMETRY_NAMES)) return -1;
  const dlk::plan::Pool2dPlan result = dlk::plan::plan_pool2d(p, backward != 0, vec, threads, max_blocks);
  plan[0] = result.index_bits;
  plan[1] = result.grid.work;
  plan[2] = result.grid.blocks;
  plan[3] = result.grid.threads;
  plan[4] = dlk::plan::grid_stride_is_exact(result.grid, result.index_bits) ? 1 : 0;
  return 0;
}

// grid[0..1] = row blocks (grid.x), heads (grid.y); the chunks are the sequences of each launch (grid.z).
DLK_API int64_t dlk_plan_attention_grid(int64_t rows, int64_t block_rows, int64_t heads, int64_t batch,
                                        int64_t* grid, int64_t* firsts, int64_t* sizes, int64_t capacity) {
  if (block_rows < 1) return -1;
  const dlk::plan::AttentionGrid g = dlk::plan::plan_attention_grid(rows, block_rows, heads, batch);
  grid[0] = g.row_blocks;
  grid[1] = g.heads;
  return g.valid() ? write_chunks(g.sequences, firsts, sizes, capacity) : -1;
}

// grid[0] = hidden tiles (grid.x); the chunks are the batch tiles of each launch (grid.y).
DLK_API int64_t dlk_plan_rnn_grid(int64_t hidden, int64_t hidden_tile, int64_t batch, int64_t batch_tile,
                                  int64_t* grid, int64_t* firsts, int64_t* sizes, int64_t capacity) {
  if (hidden_tile < 1 || batch_tile < 1) return -1;
  const dlk::plan::RnnGrid g = dlk::plan::plan_rnn_grid(hidden, hidden_tile, batch, batch_tile);
  grid[0] = g.hidden_tiles;
  return g.valid() ? write_chunks(g.batch_tiles, firsts, sizes, capacity) : -1;
}
