// AXI-Stream driver for the Verilated graph top (rtlsim_top), built by hw_models.rtlsim.build.
//
// usage: Vrtlsim_top FOLDER
// FOLDER/run.cfg holds one "key value" line per setting (lists comma-separated, per-node lists
// ';'-separated):
//   frames F            frames to simulate
//   backpressure P      probability that an output's TREADY is low in a cycle (each output)
//   gaps G              probability that an input, between words, offers nothing in a cycle
//   seed S              seeds both random streams
//   stall_cycles C      stop ("stall") when no output word came for C cycles
//   max_cycles M        stop ("cycle_limit") after M cycles in all, so no run is unbounded
//   node_stats 0|1      per-node counters (below)
//   in_words a,b        words in FOLDER/in{k}.bin per input stream k
//   out_wpf a,b         output words per frame per output stream k
//   edge_wpf ...        words per frame of every edge (all edges of the top, in edge order)
//   node_in 0;1;2,3     each node's input edges (in{k}_V order), nodes ';'-separated
//   node_out 1;2,3;4    each node's output edges (out{k}_V order)
//   fifo_limits ...     builds for FIFO sizing: capacity per gauge in words (0: unbounded)
// FOLDER/in{k}.bin holds input k's words, each as IN_W32 little-endian uint32 (from the port
// width). The harness offers them on in{k}_V (an input that is not offering a word starts one
// only with probability 1 - G in a cycle; an offered word stays until accepted, as AXI wants),
// accepts out{k}_V, and stops when every output delivered out_wpf * F words, or on a stall or
// the cycle bound. It then runs a short drain and counts surplus output words. Outputs go to
// FOLDER/out{k}.bin, stats to FOLDER/stats.json. While it runs it prints "frames N" lines (N
// frames done on every output) to stdout, about ten times a second.
//
// Every edge counts its transfers, for the stall diagnosis. With node_stats 1 it also measures
// per node: for each edge the harness records when its first and latest whole frame ended and
// the summed first-to-last-word span of its frames; for each node it counts the cycles in which
// an output word was offered but not accepted ("blocked") or, offering nothing, some input
// offered nothing ("starved"; TREADY is not used here: AXI lets a sink raise it only after
// TVALID, as FINN's SWG does), and snapshots those counters when its first and latest frame on
// its out0_V ended. Everything else is the node's own work (its busy cycles).
//
// Builds for FIFO sizing (-DRTLSIM_FIFOS=K) replace the graph's K FIFOs by depth-limited
// gauges, and the stats report each gauge's highest occupancy ("fifo_maxcount").
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "Vrtlsim_top.h"
#include "rtlsim_streams.h"  // RTLSIM_FOR_IN(X) / RTLSIM_FOR_OUT(X): X(k) per top stream k
#include "verilated.h"

#ifndef RTLSIM_EDGES
#error "build with -DRTLSIM_EDGES=<number of streams in the graph>"
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

std::vector<uint64_t> parse_list(const std::string& s) {
    std::vector<uint64_t> out;
    const char* p = s.c_str();
    while (*p) {
        char* end = nullptr;
        out.push_back(std::strtoull(p, &end, 10));
        if (end == p) break;
        p = *end == ',' ? end + 1 : end;
    }
    return out;
}

std::vector<std::vector<uint64_t>> parse_lists(const std::string& s) {
    std::vector<std::vector<uint64_t>> out;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ';')) out.push_back(parse_list(part));
    return out;
}

constexpr int N_EDGES = RTLSIM_EDGES;
constexpr int EW = (N_EDGES + 31) / 32;  // 32-bit words of the dbg_vld / dbg_rdy vectors

bool bit(const uint32_t* v, uint64_t i) { return (v[i >> 5] >> (i & 31)) & 1u; }

// Per-edge and per-node counters (see the header).
struct Counters {
    std::vector<uint64_t> wpf, xfers, last, frames, done_first, done_last, start, span;
    std::vector<std::vector<uint64_t>> node_in, node_out;
    std::vector<int> snap_of;  // per edge: the node whose out0_V it is (-1: none)
    std::vector<uint64_t> blk, stv, blk_first, stv_first, blk_last, stv_last;
    bool nodes;

    Counters(std::vector<uint64_t> edge_wpf, std::vector<std::vector<uint64_t>> ins,
             std::vector<std::vector<uint64_t>> outs, bool node_stats)
        : wpf(std::move(edge_wpf)), xfers(N_EDGES), last(N_EDGES), frames(N_EDGES),
          done_first(N_EDGES), done_last(N_EDGES), start(N_EDGES), span(N_EDGES),
          node_in(std::move(ins)), node_out(std::move(outs)), snap_of(N_EDGES, -1),
          blk(node_in.size()), stv(node_in.size()), blk_first(node_in.size()),
          stv_first(node_in.size()), blk_last(node_in.size()), stv_last(node_in.size()),
          nodes(node_stats) {
        for (std::size_t i = 0; i < node_out.size(); ++i) snap_of[node_out[i][0]] = i;
    }

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
        for (std::size_t i = 0; i < node_in.size(); ++i) {
            bool offered = false, refused = false;
            for (uint64_t e : node_out[i]) {
                if (bit(vld, e)) {
                    offered = true;
                    refused = refused || !bit(rdy, e);
                }
            }
            if (offered) {
                if (refused) ++blk[i];  // output offered, not accepted
                continue;
            }
            for (uint64_t e : node_in[i]) {
                if (!bit(vld, e)) {
                    ++stv[i];  // nothing produced and an input offers nothing
                    break;
                }
            }
        }
    }

    void edge_word(int e, uint64_t cycle) {
        if (xfers[e] % wpf[e] == 0) start[e] = cycle;
        if (++xfers[e] % wpf[e] != 0) return;
        span[e] += cycle - start[e] + 1;
        done_last[e] = cycle;
        if (frames[e]++ == 0) done_first[e] = cycle;
        const int i = snap_of[e];
        if (i < 0) return;
        if (frames[e] == 1) {
            blk_first[i] = blk[i];
            stv_first[i] = stv[i];
        }
        blk_last[i] = blk[i];
        stv_last[i] = stv[i];
    }
};

void write_list(FILE* s, const char* key, const std::vector<uint64_t>& v) {
    std::fprintf(s, "\"%s\": [", key);
    for (std::size_t i = 0; i < v.size(); ++i)
        std::fprintf(s, "%s%llu", i ? ", " : "", static_cast<unsigned long long>(v[i]));
    std::fprintf(s, "],\n");
}

// One input stream: its words and the word on offer.
struct Input {
    std::vector<uint32_t> data;
    uint64_t n = 0, idx = 0;
    int w32 = 1;
    bool offer = false, fire = false;
    const uint32_t* cur() const { return &data[idx * w32]; }
};

// One output stream: the words received.
struct Output {
    std::vector<uint32_t> data;
    uint64_t wpf = 0, want = 0, got = 0, extra = 0;
    int w32 = 1;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s FOLDER (with FOLDER/run.cfg)\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    std::map<std::string, std::string> cfg;
    {
        std::ifstream f(dir + "/run.cfg");
        std::string key, value;
        while (f >> key) {
            std::getline(f >> std::ws, value);
            cfg[key] = value;
        }
    }
    const char* keys[] = {"frames", "backpressure", "gaps", "seed", "stall_cycles", "max_cycles",
                          "node_stats", "in_words", "out_wpf", "edge_wpf", "node_in", "node_out"};
    for (const char* k : keys) {
        if (!cfg.count(k)) {
            std::fprintf(stderr, "run.cfg has no %s\n", k);
            return 2;
        }
    }
    const uint64_t frames = std::strtoull(cfg["frames"].c_str(), nullptr, 10);
    const double bp = std::strtod(cfg["backpressure"].c_str(), nullptr);
    const double gaps = std::strtod(cfg["gaps"].c_str(), nullptr);
    const uint64_t seed = std::strtoull(cfg["seed"].c_str(), nullptr, 10);
    const uint64_t stall_cycles = std::strtoull(cfg["stall_cycles"].c_str(), nullptr, 10);
    const uint64_t max_cycles = std::strtoull(cfg["max_cycles"].c_str(), nullptr, 10);
    const bool node_stats = std::strtol(cfg["node_stats"].c_str(), nullptr, 10) != 0;
    const std::vector<uint64_t> in_words = parse_list(cfg["in_words"]);
    const std::vector<uint64_t> out_wpf = parse_list(cfg["out_wpf"]);
    const std::vector<uint64_t> e_wpf = parse_list(cfg["edge_wpf"]);
    const auto node_in = parse_lists(cfg["node_in"]), node_out = parse_lists(cfg["node_out"]);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);  // no plusargs for the model
    auto top = std::make_unique<Vrtlsim_top>(ctx.get());

    std::vector<Input> ins(RTLSIM_INS);
    std::vector<Output> outs(RTLSIM_OUTS);
#define WIDTH_IN(k) ins[k].w32 = width_words(top->in##k##_V_TDATA);
#define WIDTH_OUT(k) outs[k].w32 = width_words(top->out##k##_V_TDATA);
    RTLSIM_FOR_IN(WIDTH_IN)
    RTLSIM_FOR_OUT(WIDTH_OUT)
    bool bad = static_cast<int>(e_wpf.size()) != N_EDGES || in_words.size() != ins.size() ||
               out_wpf.size() != outs.size() || node_in.size() != node_out.size() ||
               std::find(e_wpf.begin(), e_wpf.end(), 0u) != e_wpf.end();
    for (std::size_t i = 0; !bad && i < node_in.size(); ++i) {
        bad = node_in[i].empty() || node_out[i].empty();
        for (uint64_t e : node_in[i]) bad = bad || e >= N_EDGES;
        for (uint64_t e : node_out[i]) bad = bad || e >= N_EDGES;
    }
    if (bad) {
        std::fprintf(stderr,
                     "run.cfg does not fit the top (%d edges, %d inputs, %d outputs): edge_wpf, "
                     "in_words, out_wpf, node_in/node_out\n",
                     N_EDGES, RTLSIM_INS, RTLSIM_OUTS);
        return 2;
    }
#ifdef RTLSIM_FIFOS
    {
        const std::vector<uint64_t> lim = parse_list(cfg["fifo_limits"]);
        if (static_cast<int>(lim.size()) != RTLSIM_FIFOS) {
            std::fprintf(stderr, "fifo_limits must list %d capacities\n", RTLSIM_FIFOS);
            return 2;
        }
        std::vector<uint32_t> w(lim.begin(), lim.end());
        set_sig(top->fifo_limits, w.data(), RTLSIM_FIFOS);
    }
#endif
    for (std::size_t k = 0; k < ins.size(); ++k) {
        Input& in = ins[k];
        in.n = in_words[k];
        in.data.resize(in.n * in.w32);
        const std::string path = dir + "/in" + std::to_string(k) + ".bin";
        std::ifstream f(path, std::ios::binary);
        f.read(reinterpret_cast<char*>(in.data.data()), in.data.size() * 4);
        if (!f) {
            std::fprintf(stderr, "cannot read %llu input words from %s\n",
                         static_cast<unsigned long long>(in.n), path.c_str());
            return 2;
        }
    }
    uint64_t max_wpf = 1;
    for (std::size_t k = 0; k < outs.size(); ++k) {
        outs[k].wpf = out_wpf[k];
        outs[k].want = out_wpf[k] * frames;
        outs[k].data.resize(outs[k].want * outs[k].w32);
        max_wpf = std::max(max_wpf, out_wpf[k]);
    }
    std::vector<uint64_t> frame_done;
    frame_done.reserve(frames);
    Counters cnt(e_wpf, node_in, node_out, node_stats);
    uint32_t vld[EW], rdy[EW];
    std::mt19937_64 rng(seed);
    std::mt19937_64 gap_rng(seed ^ 0x9e3779b97f4a7c15ull);
    std::bernoulli_distribution stall_out(bp), gap_in(gaps);

    // reset: 16 cycles with ap_rst_n low, no input offered, outputs ready
    top->ap_clk = 0;
    top->ap_rst_n = 0;
#define RESET_IN(k) top->in##k##_V_TVALID = 0;
#define RESET_OUT(k) top->out##k##_V_TREADY = 1;
    RTLSIM_FOR_IN(RESET_IN)
    RTLSIM_FOR_OUT(RESET_OUT)
    top->eval();
    for (int i = 0; i < 16; ++i) {
        top->ap_clk = 1;
        top->eval();
        top->ap_clk = 0;
        top->eval();
    }
    top->ap_rst_n = 1;

    uint64_t cycle = 0, last_out = 0, any_out = 0;
    const uint64_t drain_cycles = std::max<uint64_t>(256, 4 * max_wpf);  // to see surplus words
    uint64_t drain_left = 0;
    bool done = false;
    std::string status = "ok";
    auto last_report = std::chrono::steady_clock::now();

    auto drive = [&](bool drain) {
        for (Input& in : ins) {
            if (!in.offer && in.idx < in.n) in.offer = !(gaps > 0.0 && gap_in(gap_rng));
        }
#define DRIVE_IN(k)                                                                     \
    top->in##k##_V_TVALID = ins[k].offer;                                               \
    if (ins[k].offer) set_sig(top->in##k##_V_TDATA, ins[k].cur(), ins[k].w32);
#define DRIVE_OUT(k) top->out##k##_V_TREADY = drain ? 1 : !(bp > 0.0 && stall_out(rng));
        RTLSIM_FOR_IN(DRIVE_IN)
        RTLSIM_FOR_OUT(DRIVE_OUT)
    };
    auto take = [&](Output& o, const auto& sig) {
        if (o.got < o.want) {
            get_sig(sig, &o.data[o.got * o.w32], o.w32);
            ++o.got;
            last_out = cycle;
            ++any_out;
        } else {
            ++o.extra;
        }
    };
    drive(false);
    top->eval();

    while (true) {
        // sample the handshakes of this cycle (combinational outputs settled at ap_clk = 0)
#define SAMPLE_IN(k) ins[k].fire = top->in##k##_V_TVALID && top->in##k##_V_TREADY;
#define SAMPLE_OUT(k) \
    if (top->out##k##_V_TVALID && top->out##k##_V_TREADY) take(outs[k], top->out##k##_V_TDATA);
        RTLSIM_FOR_IN(SAMPLE_IN)
        RTLSIM_FOR_OUT(SAMPLE_OUT)
        get_sig(top->dbg_vld, vld, EW);
        get_sig(top->dbg_rdy, rdy, EW);
        cnt.sample(vld, rdy, cycle);
        uint64_t frames_out = frames;
        for (const Output& o : outs) frames_out = std::min(frames_out, o.got / o.wpf);
        while (frame_done.size() < frames_out) frame_done.push_back(cycle);
        // rising edge
        top->ap_clk = 1;
        top->eval();
        for (Input& in : ins) {
            if (in.fire) {
                ++in.idx;
                in.offer = false;
            }
        }
        ++cycle;
        if (!done && frames_out == frames) {
            done = true;
            drain_left = drain_cycles;
        }
        drive(done);
        top->ap_clk = 0;
        top->eval();
        if (done) {
            if (drain_left-- == 0) break;
        } else if (cycle - (any_out ? last_out : 0) > stall_cycles) {
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

    std::vector<uint64_t> accepted, got;
    uint64_t words_in = 0, words_out = 0, extra = 0;
    for (const Input& in : ins) {
        accepted.push_back(in.idx);
        words_in += in.idx;
    }
    for (std::size_t k = 0; k < outs.size(); ++k) {
        const Output& o = outs[k];
        std::ofstream f(dir + "/out" + std::to_string(k) + ".bin", std::ios::binary);
        f.write(reinterpret_cast<const char*>(o.data.data()), o.got * o.w32 * 4);
        got.push_back(o.got);
        words_out += o.got;
        extra = std::max(extra, o.extra);
    }
    FILE* s = std::fopen((dir + "/stats.json").c_str(), "w");
    if (!s) return 2;
    std::fprintf(s, "{\n\"status\": \"%s\",\n", status.c_str());
    std::fprintf(s, "\"cycles\": %llu,\n", static_cast<unsigned long long>(cycle));
    std::fprintf(s, "\"words_in\": %llu,\n", static_cast<unsigned long long>(words_in));
    std::fprintf(s, "\"words_out\": %llu,\n", static_cast<unsigned long long>(words_out));
    std::fprintf(s, "\"surplus_words\": %llu,\n", static_cast<unsigned long long>(extra));
    std::fprintf(s, "\"last_out_cycle\": %llu,\n", static_cast<unsigned long long>(last_out));
    std::fprintf(s, "\"cpu_s\": %.6f,\n", static_cast<double>(std::clock()) / CLOCKS_PER_SEC);
    write_list(s, "in_accepted", accepted);
    write_list(s, "out_words", got);
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
