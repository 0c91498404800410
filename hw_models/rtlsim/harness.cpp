// AXI-Stream driver for the Verilated chain top (rtlsim_top), built by hw_models.rtlsim.build.
//
// usage: Vrtlsim_top IN_BIN OUT_BIN STATS_JSON N_IN_WORDS OUT_WORDS_PER_FRAME N_FRAMES
//                    BACKPRESSURE SEED STALL_CYCLES EDGE_WORDS_PER_FRAME NODE_STATS
//                    MAX_CYCLES [FIFO_LIMITS]
// IN_BIN holds N_IN_WORDS input words, each as IN_W32 little-endian uint32 (IN_W32 from the
// port width). The harness offers them back to back on in0_V, accepts out0_V (with output
// TREADY dropped at random with probability BACKPRESSURE), and stops when OUT_WORDS_PER_FRAME *
// N_FRAMES words came out, when no output word came for STALL_CYCLES cycles (status "stall"), or
// after MAX_CYCLES cycles in all (status "cycle_limit"), so no run is unbounded.
// It then runs a short drain and counts surplus output words. Stats go to STATS_JSON. While it
// runs it prints "frames N" lines (N output frames done) to stdout, about ten times a second.
//
// Every edge (edge 0 the chain input, edge i+1 node i's output) counts its transfers, for the
// stall diagnosis. With NODE_STATS=1 it also measures per node: EDGE_WORDS_PER_FRAME is a
// comma-separated list of the words per frame of every edge. For each edge the harness records
// when its first and latest whole frame ended and the summed first-to-last-word span of its
// frames; for each node (input edge i, output edge i+1) it counts the cycles in which the node
// produced no output word because its output was offered but not accepted ("blocked") or while
// its producer offered no input ("starved"; TREADY is not used here: AXI lets a sink raise it
// only after TVALID, as FINN's SWG does), and snapshots those counters when its first and latest
// output frame ended. Everything else is the node's own work (its busy cycles).
//
// Builds for FIFO sizing (-DRTLSIM_FIFOS=K) replace the chain's K FIFOs by depth-limited gauges:
// FIFO_LIMITS is a comma-separated list of K capacities in words (0: unbounded), and the stats
// report each gauge's highest occupancy ("fifo_maxcount").
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "Vrtlsim_top.h"
#include "verilated.h"

#ifndef RTLSIM_EDGES
#error "build with -DRTLSIM_EDGES=<number of streams in the chain>"
#endif

namespace {

template <typename T>
int width_words(const T&) {
    return (sizeof(T) + 3) / 4;
}
template <std::size_t N>
int width_words(const VlWide<N>&) {
    return N;
}

template <typename T>
void set_sig(T& sig, const uint32_t* w, int n) {
    uint64_t v = w[0];
    if (n > 1) v |= static_cast<uint64_t>(w[1]) << 32;
    sig = static_cast<T>(v);
}
template <std::size_t N>
void set_sig(VlWide<N>& sig, const uint32_t* w, int n) {
    for (std::size_t i = 0; i < N; ++i) sig[i] = static_cast<int>(i) < n ? w[i] : 0;
}

template <typename T>
void get_sig(const T& sig, uint32_t* w, int n) {
    uint64_t v = static_cast<uint64_t>(sig);
    w[0] = static_cast<uint32_t>(v);
    if (n > 1) w[1] = static_cast<uint32_t>(v >> 32);
}
template <std::size_t N>
void get_sig(const VlWide<N>& sig, uint32_t* w, int n) {
    for (int i = 0; i < n; ++i) w[i] = sig[i];
}

std::vector<uint64_t> parse_list(const char* p) {
    std::vector<uint64_t> out;
    while (*p) {
        char* end = nullptr;
        out.push_back(std::strtoull(p, &end, 10));
        if (end == p) break;
        p = *end == ',' ? end + 1 : end;
    }
    return out;
}

constexpr int N_EDGES = RTLSIM_EDGES;
constexpr int N_NODES = N_EDGES - 1;
constexpr int EW = (N_EDGES + 31) / 32;  // 32-bit words of the dbg_vld / dbg_rdy vectors

bool bit(const uint32_t* v, int i) { return (v[i >> 5] >> (i & 31)) & 1u; }

// Per-edge and per-node counters (see the header).
struct Counters {
    std::vector<uint64_t> wpf, xfers, last, frames, done_first, done_last, start, span;
    std::vector<uint64_t> blk, stv, blk_first, stv_first, blk_last, stv_last;
    bool nodes;

    Counters(std::vector<uint64_t> edge_wpf, bool node_stats)
        : wpf(std::move(edge_wpf)), xfers(N_EDGES), last(N_EDGES), frames(N_EDGES),
          done_first(N_EDGES), done_last(N_EDGES), start(N_EDGES), span(N_EDGES),
          blk(N_NODES), stv(N_NODES), blk_first(N_NODES), stv_first(N_NODES),
          blk_last(N_NODES), stv_last(N_NODES), nodes(node_stats) {}

    // one cycle's handshakes: vld/rdy bit vectors of all edges
    void sample(const uint32_t* vld, const uint32_t* rdy, uint64_t cycle) {
        for (int w = 0; w < EW; ++w) {
            uint32_t fire = vld[w] & rdy[w];
            while (fire) {
                const int e = 32 * w + __builtin_ctz(fire);
                fire &= fire - 1;
                if (nodes) edge_word(e, cycle);
                else ++xfers[e];
                last[e] = cycle;
            }
        }
        if (!nodes) return;
        for (int i = 0; i < N_NODES; ++i) {
            if (bit(vld, i + 1)) {
                if (!bit(rdy, i + 1)) ++blk[i];  // output offered, not accepted
            } else if (!bit(vld, i)) {
                ++stv[i];  // nothing produced and no input offered to it
            }
        }
    }

    void edge_word(int e, uint64_t cycle) {
        if (xfers[e] % wpf[e] == 0) start[e] = cycle;
        if (++xfers[e] % wpf[e] != 0) return;
        span[e] += cycle - start[e] + 1;
        done_last[e] = cycle;
        if (frames[e]++ == 0) done_first[e] = cycle;
        if (e == 0) return;
        if (frames[e] == 1) {
            blk_first[e - 1] = blk[e - 1];
            stv_first[e - 1] = stv[e - 1];
        }
        blk_last[e - 1] = blk[e - 1];
        stv_last[e - 1] = stv[e - 1];
    }
};

void write_list(FILE* s, const char* key, const std::vector<uint64_t>& v) {
    std::fprintf(s, "\"%s\": [", key);
    for (std::size_t i = 0; i < v.size(); ++i)
        std::fprintf(s, "%s%llu", i ? ", " : "", static_cast<unsigned long long>(v[i]));
    std::fprintf(s, "],\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 13 && argc != 14) {
        std::fprintf(stderr,
                     "usage: %s IN OUT STATS N_IN WPF FRAMES BP SEED STALL EDGE_WPF NODE_STATS "
                     "MAX_CYCLES [FIFO_LIMITS]\n",
                     argv[0]);
        return 2;
    }
    const std::string in_path = argv[1], out_path = argv[2], stats_path = argv[3];
    const uint64_t n_in = std::strtoull(argv[4], nullptr, 10);
    const uint64_t wpf = std::strtoull(argv[5], nullptr, 10);
    const uint64_t frames = std::strtoull(argv[6], nullptr, 10);
    const double bp = std::strtod(argv[7], nullptr);
    const uint64_t seed = std::strtoull(argv[8], nullptr, 10);
    const uint64_t stall_cycles = std::strtoull(argv[9], nullptr, 10);
    const std::vector<uint64_t> e_wpf = parse_list(argv[10]);
    const bool node_stats = std::strtol(argv[11], nullptr, 10) != 0;
    const uint64_t max_cycles = std::strtoull(argv[12], nullptr, 10);
    const uint64_t n_out = wpf * frames;

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);  // no plusargs for the model
    auto top = std::make_unique<Vrtlsim_top>(ctx.get());

    const int iw = width_words(top->in0_V_TDATA);
    const int ow = width_words(top->out0_V_TDATA);
    if (static_cast<int>(e_wpf.size()) != N_EDGES ||
        std::find(e_wpf.begin(), e_wpf.end(), 0u) != e_wpf.end()) {
        std::fprintf(stderr, "EDGE_WPF must list %d positive words-per-frame counts\n", N_EDGES);
        return 2;
    }
#ifdef RTLSIM_FIFOS
    {
        const std::vector<uint64_t> lim = parse_list(argc == 14 ? argv[13] : "");
        if (static_cast<int>(lim.size()) != RTLSIM_FIFOS) {
            std::fprintf(stderr, "FIFO_LIMITS must list %d capacities\n", RTLSIM_FIFOS);
            return 2;
        }
        std::vector<uint32_t> w(lim.begin(), lim.end());
        set_sig(top->fifo_limits, w.data(), RTLSIM_FIFOS);
    }
#endif
    std::vector<uint32_t> in(n_in * iw);
    {
        std::ifstream f(in_path, std::ios::binary);
        f.read(reinterpret_cast<char*>(in.data()), in.size() * 4);
        if (!f) {
            std::fprintf(stderr, "cannot read %llu input words from %s\n",
                         static_cast<unsigned long long>(n_in), in_path.c_str());
            return 2;
        }
    }
    std::vector<uint32_t> out(n_out * ow);
    std::vector<uint64_t> frame_done;
    frame_done.reserve(frames);
    Counters cnt(e_wpf, node_stats);
    uint32_t vld[EW], rdy[EW];
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution stall_out(bp);

    // reset: 16 cycles with ap_rst_n low, no input offered, output ready
    top->ap_clk = 0;
    top->ap_rst_n = 0;
    top->in0_V_TVALID = 0;
    top->out0_V_TREADY = 1;
    top->eval();
    for (int i = 0; i < 16; ++i) {
        top->ap_clk = 1;
        top->eval();
        top->ap_clk = 0;
        top->eval();
    }
    top->ap_rst_n = 1;

    uint64_t in_idx = 0, got = 0, cycle = 0, last_out = 0, extra = 0;
    const uint64_t drain_cycles = std::max<uint64_t>(256, 4 * wpf);  // to see surplus words
    uint64_t drain_left = 0;
    bool done = false;
    std::string status = "ok";
    auto last_report = std::chrono::steady_clock::now();

    auto drive = [&](bool drain) {
        top->in0_V_TVALID = in_idx < n_in;
        if (in_idx < n_in) set_sig(top->in0_V_TDATA, &in[in_idx * iw], iw);
        top->out0_V_TREADY = drain ? 1 : !(bp > 0.0 && stall_out(rng));
    };
    drive(false);
    top->eval();

    while (true) {
        // sample the handshakes of this cycle (combinational outputs settled at ap_clk = 0)
        const bool in_fire = top->in0_V_TVALID && top->in0_V_TREADY;
        const bool out_fire = top->out0_V_TVALID && top->out0_V_TREADY;
        get_sig(top->dbg_vld, vld, EW);
        get_sig(top->dbg_rdy, rdy, EW);
        cnt.sample(vld, rdy, cycle);
        if (out_fire) {
            if (got < n_out) {
                get_sig(top->out0_V_TDATA, &out[got * ow], ow);
                ++got;
                last_out = cycle;
                if (got % wpf == 0) frame_done.push_back(cycle);
            } else {
                ++extra;
            }
        }
        // rising edge
        top->ap_clk = 1;
        top->eval();
        if (in_fire) ++in_idx;
        ++cycle;
        if (!done && got == n_out) {
            done = true;
            drain_left = drain_cycles;
        }
        drive(done);
        top->ap_clk = 0;
        top->eval();
        if (done) {
            if (drain_left-- == 0) break;
        } else if (cycle - (got ? last_out : 0) > stall_cycles) {
            status = "stall";
            break;
        } else if (cycle >= max_cycles) {
            status = "cycle_limit";
            break;
        }
        if ((cycle & 4095) == 0) {
            const auto now = std::chrono::steady_clock::now();
            if (now - last_report > std::chrono::milliseconds(100)) {
                last_report = now;
                std::printf("frames %zu\n", frame_done.size());
                std::fflush(stdout);
            }
        }
    }

    {
        std::ofstream f(out_path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(out.data()), got * ow * 4);
    }
    FILE* s = std::fopen(stats_path.c_str(), "w");
    if (!s) return 2;
    std::fprintf(s, "{\n\"status\": \"%s\",\n", status.c_str());
    std::fprintf(s, "\"cycles\": %llu,\n", static_cast<unsigned long long>(cycle));
    std::fprintf(s, "\"words_in\": %llu,\n", static_cast<unsigned long long>(in_idx));
    std::fprintf(s, "\"words_out\": %llu,\n", static_cast<unsigned long long>(got));
    std::fprintf(s, "\"surplus_words\": %llu,\n", static_cast<unsigned long long>(extra));
    std::fprintf(s, "\"last_out_cycle\": %llu,\n", static_cast<unsigned long long>(last_out));
    std::fprintf(s, "\"cpu_s\": %.6f,\n", static_cast<double>(std::clock()) / CLOCKS_PER_SEC);
    write_list(s, "frame_done", frame_done);
    write_list(s, "edge_xfers", cnt.xfers);
    write_list(s, "edge_last", cnt.last);
    if (node_stats) {
        write_list(s, "edge_frames", cnt.frames);
        write_list(s, "edge_done_first", cnt.done_first);
        write_list(s, "edge_done_last", cnt.done_last);
        write_list(s, "edge_span_sum", cnt.span);
        write_list(s, "node_blocked_first", cnt.blk_first);
        write_list(s, "node_starved_first", cnt.stv_first);
        write_list(s, "node_blocked_last", cnt.blk_last);
        write_list(s, "node_starved_last", cnt.stv_last);
    }
#ifdef RTLSIM_FIFOS
    {
        uint32_t mc[RTLSIM_FIFOS];
        get_sig(top->fifo_maxcount, mc, RTLSIM_FIFOS);
        write_list(s, "fifo_maxcount", std::vector<uint64_t>(mc, mc + RTLSIM_FIFOS));
    }
#endif
    get_sig(top->dbg_vld, vld, EW);  // the handshake state where it stopped
    get_sig(top->dbg_rdy, rdy, EW);
    std::vector<uint64_t> v(N_EDGES), r(N_EDGES);
    for (int e = 0; e < N_EDGES; ++e) {
        v[e] = bit(vld, e);
        r[e] = bit(rdy, e);
    }
    write_list(s, "edge_vld", v);
    write_list(s, "edge_rdy", r);
    std::fprintf(s, "\"node_stats\": %s\n}\n", node_stats ? "true" : "false");
    std::fclose(s);
    top->final();
    return 0;
}
