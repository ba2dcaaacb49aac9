// Batch C API around the Verilated NeuroVM chip (ChipPins top), loaded by
// neurovm.host.verilator through ctypes.  Python never runs per clock: it
// pushes command words, asks for N cycles / N output words / idle, and pulls
// the output words.  The output stream is always ready (the host never stalls).
//
// The model may be compiled with -fvisibility=hidden (host/verilator.py): only
// the nv_* functions below are exported, so calls inside the library bind
// directly instead of through the PLT.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "Vchip_pins.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

struct Model {
    VerilatedContext* ctx;
    Vchip_pins* top;
    std::vector<uint32_t> in;   // pushed command words; in[in_head:] not yet consumed
    size_t in_head = 0;
    std::vector<uint32_t> out;
    uint64_t cycles = 0;
#if VM_TRACE
    VerilatedVcdC* tfp = nullptr;
#endif
};

static inline bool in_empty(const Model* m) { return m->in_head == m->in.size(); }

static void tick(Model* m) {
    Vchip_pins* t = m->top;
    const bool have = !in_empty(m);
    t->cmd_valid = have;
    t->cmd_data = have ? m->in[m->in_head] : 0;
    t->out_ready = 1;
    t->clk = 0;
    t->eval();
#if VM_TRACE
    if (m->tfp) m->tfp->dump(2 * m->cycles);
#endif
    const bool take_in = t->cmd_valid && t->cmd_ready;
    const bool take_out = t->out_valid;
    const uint32_t word = t->out_data;
    t->clk = 1;
    t->eval();
#if VM_TRACE
    if (m->tfp) m->tfp->dump(2 * m->cycles + 1);
#endif
    if (take_in) m->in_head++;
    if (take_out) m->out.push_back(word);
    m->cycles++;
}

#define NV_API __attribute__((visibility("default")))

extern "C" {

NV_API void* nv_create(const char* trace_path) {
    Model* m = new Model;
    m->ctx = new VerilatedContext;
    m->top = new Vchip_pins{m->ctx};
#if VM_TRACE
    if (trace_path && *trace_path) {
        m->ctx->traceEverOn(true);
        m->tfp = new VerilatedVcdC;
        m->top->trace(m->tfp, 99);
        m->tfp->open(trace_path);
    }
#else
    (void)trace_path;
#endif
    // the model has no reset input: registers start at their power-on values
    m->top->clk = 0;
    m->top->eval();
    return m;
}

NV_API void nv_destroy(void* h) {
    Model* m = static_cast<Model*>(h);
#if VM_TRACE
    if (m->tfp) { m->tfp->close(); delete m->tfp; }
#endif
    m->top->final();
    delete m->top;
    delete m->ctx;
    delete m;
}

NV_API void nv_push(void* h, const uint32_t* words, uint64_t n) {
    Model* m = static_cast<Model*>(h);
    if (in_empty(m)) {   // drop the consumed words: all of them, or the front half once it is large
        m->in.clear();
        m->in_head = 0;
    } else if (m->in_head >= 4096 && 2 * m->in_head >= m->in.size()) {
        m->in.erase(m->in.begin(), m->in.begin() + static_cast<std::ptrdiff_t>(m->in_head));
        m->in_head = 0;
    }
    m->in.insert(m->in.end(), words, words + n);
}

// Run until: every pushed word is consumed and the chip is idle (until_idle),
// or at least `want_words` output words are waiting (want_words > 0), or
// `max_cycles` cycles ran.  Returns the cycles run.
NV_API uint64_t nv_run(void* h, uint64_t max_cycles, uint64_t want_words, int until_idle) {
    Model* m = static_cast<Model*>(h);
    const uint64_t start = m->cycles;
    while (m->cycles - start < max_cycles) {
        if (want_words && m->out.size() >= want_words) break;
        // `idle` depends on registers only, so the value after the last clock edge is current
        if (until_idle && in_empty(m) && m->top->idle) break;
        tick(m);
    }
    return m->cycles - start;
}

NV_API uint64_t nv_pull(void* h, uint32_t* buf, uint64_t max) {
    Model* m = static_cast<Model*>(h);
    uint64_t n = m->out.size() < max ? m->out.size() : max;
    if (n) {
        std::memcpy(buf, m->out.data(), n * sizeof(uint32_t));
        m->out.erase(m->out.begin(), m->out.begin() + n);
    }
    return n;
}

NV_API uint64_t nv_available(void* h) { return static_cast<Model*>(h)->out.size(); }
NV_API uint64_t nv_pending(void* h) {
    const Model* m = static_cast<Model*>(h);
    return m->in.size() - m->in_head;
}
NV_API uint64_t nv_cycles(void* h) { return static_cast<Model*>(h)->cycles; }
NV_API uint32_t nv_timestep(void* h) { return static_cast<Model*>(h)->top->timestep; }
NV_API int nv_at_boundary(void* h) { return static_cast<Model*>(h)->top->at_boundary; }

}  // extern "C"
