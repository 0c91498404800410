// AXI-Stream driver for the Verilated chain top (rtlsim_top), built by hw_models.rtlsim.build.
//
// usage: Vrtlsim_top IN_BIN OUT_BIN STATS_JSON N_IN_WORDS OUT_WORDS_PER_FRAME N_FRAMES
//                    BACKPRESSURE SEED STALL_CYCLES EDGE_WORDS_PER_FRAME
// IN_BIN holds N_IN_WORDS input words, each as IN_W32 little-endian uint32 (IN_W32 from the
// port width). The harness offers them back to back on in0_V, accepts out0_V (with output
// TREADY dropped at random with probability BACKPRESSURE), and stops when OUT_WORDS_PER_FRAME *
// N_FRAMES words came out, or when no output word came for STALL_CYCLES cycles (status "stall").
// It then runs a short drain and counts surplus output words. Stats (per-frame completion cycles,
// per-edge transfer counts and handshake state) go to STATS_JSON.
//
// Per-node measurement: EDGE_WORDS_PER_FRAME is a comma-separated list of the words per frame
// of every edge (edge 0 the chain input, edge i+1 node i's output). For each edge the harness
// records when its first and latest whole frame ended and the summed first-to-last-word span of
// its frames; for each node (input edge i, output edge i+1) it counts the cycles in which the
// node produced no output word because its output was offered but not accepted ("blocked") or
// while its producer offered no input ("starved"; TREADY is not used here: AXI lets a sink
// raise it only after TVALID, as FINN's SWG does), and snapshots
// those counters when its first and latest output frame ended. Everything else is the node's
// own work (its busy cycles).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "Vrtlsim_top.h"
#include "verilated.h"

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

template <typename T>
bool get_bit(const T& sig, int b) {
    return (static_cast<uint64_t>(sig) >> b) & 1u;
}
template <std::size_t N>
bool get_bit(const VlWide<N>& sig, int b) {
    return (sig[b / 32] >> (b % 32)) & 1u;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 11) {
        std::fprintf(stderr, "usage: %s IN OUT STATS N_IN WPF FRAMES BP SEED STALL EDGE_WPF\n",
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
    const uint64_t n_out = wpf * frames;

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);  // no plusargs for the model
    auto top = std::make_unique<Vrtlsim_top>(ctx.get());

    const int iw = width_words(top->in0_V_TDATA);
    const int ow = width_words(top->out0_V_TDATA);
#ifndef RTLSIM_EDGES
#error "build with -DRTLSIM_EDGES=<number of streams in the chain>"
#endif
    const int n_edges = RTLSIM_EDGES;
    const int n_nodes = n_edges - 1;
    std::vector<uint64_t> e_wpf;
    for (const char* p = argv[10]; *p;) {
        char* end = nullptr;
        e_wpf.push_back(std::strtoull(p, &end, 10));
        if (end == p) break;
        p = *end == ',' ? end + 1 : end;
    }
    if (static_cast<int>(e_wpf.size()) != n_edges ||
        std::find(e_wpf.begin(), e_wpf.end(), 0u) != e_wpf.end()) {
        std::fprintf(stderr, "EDGE_WPF must list %d positive words-per-frame counts\n", n_edges);
        return 2;
    }
    if (ow > 1024) {
        std::fprintf(stderr, "output stream wider than 32768 bits\n");
        return 2;
    }
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
    std::vector<uint32_t> out;
    out.reserve(n_out * ow);
    std::vector<uint64_t> frame_done;
    std::vector<uint64_t> edge_xfers(n_edges, 0), edge_last(n_edges, 0);
    // per edge: whole frames seen, cycle of the first/latest frame's last word, first word of the
    // current frame, summed first-to-last-word spans
    std::vector<uint64_t> e_frames(n_edges, 0), e_done_first(n_edges, 0), e_done_last(n_edges, 0);
    std::vector<uint64_t> e_start(n_edges, 0), e_span(n_edges, 0);
    std::vector<uint8_t> vld(n_edges), rdy(n_edges);
    // per node: blocked / starved cycle counters, and their values at the first/latest frame end
    std::vector<uint64_t> n_blk(n_nodes, 0), n_stv(n_nodes, 0);
    std::vector<uint64_t> n_blk_first(n_nodes, 0), n_stv_first(n_nodes, 0);
    std::vector<uint64_t> n_blk_last(n_nodes, 0), n_stv_last(n_nodes, 0);
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
    uint32_t scratch[1024];

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
        for (int e = 0; e < n_edges; ++e) {
            vld[e] = get_bit(top->dbg_vld, e);
            rdy[e] = get_bit(top->dbg_rdy, e);
        }
        for (int i = 0; i < n_nodes; ++i) {
            if (vld[i + 1] && rdy[i + 1]) continue;  // produced a word: busy
            if (vld[i + 1]) ++n_blk[i];               // output offered, not accepted
            else if (!vld[i]) ++n_stv[i];             // and no input offered to it
        }
        for (int e = 0; e < n_edges; ++e) {
            if (!(vld[e] && rdy[e])) continue;
            if (edge_xfers[e] % e_wpf[e] == 0) e_start[e] = cycle;
            ++edge_xfers[e];
            edge_last[e] = cycle;
            if (edge_xfers[e] % e_wpf[e] == 0) {
                e_span[e] += cycle - e_start[e] + 1;
                e_done_last[e] = cycle;
                if (e_frames[e]++ == 0) e_done_first[e] = cycle;
                if (e > 0) {
                    if (e_frames[e] == 1) {
                        n_blk_first[e - 1] = n_blk[e - 1];
                        n_stv_first[e - 1] = n_stv[e - 1];
                    }
                    n_blk_last[e - 1] = n_blk[e - 1];
                    n_stv_last[e - 1] = n_stv[e - 1];
                }
            }
        }
        if (out_fire) {
            if (got < n_out) {
                get_sig(top->out0_V_TDATA, scratch, ow);
                out.insert(out.end(), scratch, scratch + ow);
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
        }
    }

    {
        std::ofstream f(out_path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(out.data()), out.size() * 4);
    }
    FILE* s = std::fopen(stats_path.c_str(), "w");
    if (!s) return 2;
    auto list = [&](const char* key, auto get, int n) {
        std::fprintf(s, "\"%s\": [", key);
        for (int i = 0; i < n; ++i) std::fprintf(s, "%s%llu", i ? ", " : "",
                                                 static_cast<unsigned long long>(get(i)));
        std::fprintf(s, "],\n");
    };
    std::fprintf(s, "{\n\"status\": \"%s\",\n", status.c_str());
    std::fprintf(s, "\"cycles\": %llu,\n", static_cast<unsigned long long>(cycle));
    std::fprintf(s, "\"words_in\": %llu,\n", static_cast<unsigned long long>(in_idx));
    std::fprintf(s, "\"words_out\": %llu,\n", static_cast<unsigned long long>(got));
    std::fprintf(s, "\"surplus_words\": %llu,\n", static_cast<unsigned long long>(extra));
    std::fprintf(s, "\"last_out_cycle\": %llu,\n", static_cast<unsigned long long>(last_out));
    list("frame_done", [&](int i) { return frame_done[i]; }, static_cast<int>(frame_done.size()));
    list("edge_xfers", [&](int i) { return edge_xfers[i]; }, n_edges);
    list("edge_last", [&](int i) { return edge_last[i]; }, n_edges);
    list("edge_frames", [&](int i) { return e_frames[i]; }, n_edges);
    list("edge_done_first", [&](int i) { return e_done_first[i]; }, n_edges);
    list("edge_done_last", [&](int i) { return e_done_last[i]; }, n_edges);
    list("edge_span_sum", [&](int i) { return e_span[i]; }, n_edges);
    list("node_blocked", [&](int i) { return n_blk[i]; }, n_nodes);
    list("node_starved", [&](int i) { return n_stv[i]; }, n_nodes);
    list("node_blocked_first", [&](int i) { return n_blk_first[i]; }, n_nodes);
    list("node_starved_first", [&](int i) { return n_stv_first[i]; }, n_nodes);
    list("node_blocked_last", [&](int i) { return n_blk_last[i]; }, n_nodes);
    list("node_starved_last", [&](int i) { return n_stv_last[i]; }, n_nodes);
    list("edge_vld", [&](int i) { return static_cast<uint64_t>(get_bit(top->dbg_vld, i)); },
         n_edges);
    std::fprintf(s, "\"edge_rdy\": [");
    for (int i = 0; i < n_edges; ++i)
        std::fprintf(s, "%s%d", i ? ", " : "", static_cast<int>(get_bit(top->dbg_rdy, i)));
    std::fprintf(s, "]\n}\n");
    std::fclose(s);
    top->final();
    return 0;
}
