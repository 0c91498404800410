// densiflow: lane-wise integer add of two AXI streams (the join of a residual block).
//
// Each stream word carries PE lanes, lane i in bits [i*BITS +: BITS] (FINN's packing). Every
// lane is sign- or zero-extended to O_BITS and added; O_BITS holds the exact sum (chosen by
// hw_models.finn_ops.add_streams), so nothing wraps. A word pair is taken when both inputs are
// valid and the output register is free or being read: each input's ready depends on the other
// input's valid and on m_tready, never on its own valid; m_tvalid is a register. One word per
// cycle, latency one cycle.
module densiflow_add_streams #(
	int unsigned  PE       = 1,
	int unsigned  A_BITS   = 4,
	bit           A_SIGNED = 1,
	int unsigned  B_BITS   = 4,
	bit           B_SIGNED = 1,
	int unsigned  O_BITS   = 5,  // > A_BITS and > B_BITS
	int unsigned  A_WIDTH  = (PE*A_BITS + 7)/8 * 8,  // TDATA bits (padded to bytes)
	int unsigned  B_WIDTH  = (PE*B_BITS + 7)/8 * 8,
	int unsigned  O_WIDTH  = (PE*O_BITS + 7)/8 * 8
)(
	input	logic  clk,
	input	logic  rst_n,  // synchronous, active low

	/* verilator lint_off UNUSEDSIGNAL */  // the padding bits above PE*BITS
	input	logic [A_WIDTH-1:0]  a_tdata,
	input	logic  a_tvalid,
	output	logic  a_tready,

	input	logic [B_WIDTH-1:0]  b_tdata,
	/* verilator lint_on UNUSEDSIGNAL */
	input	logic  b_tvalid,
	output	logic  b_tready,

	output	logic [O_WIDTH-1:0]  m_tdata,
	output	logic  m_tvalid,
	input	logic  m_tready
);
	logic  OValid;
	logic [PE*O_BITS-1:0]  OData;

	uwire  free = !OValid || m_tready;
	assign	a_tready = b_tvalid && free;
	assign	b_tready = a_tvalid && free;
	uwire  take = a_tvalid && b_tvalid && free;

	uwire [PE*O_BITS-1:0]  sum;
	for(genvar  i = 0; i < PE; i++) begin : genLanes
		uwire [A_BITS-1:0]  a = a_tdata[i*A_BITS +: A_BITS];
		uwire [B_BITS-1:0]  b = b_tdata[i*B_BITS +: B_BITS];
		uwire [O_BITS-1:0]  ax = { {(O_BITS-A_BITS){A_SIGNED && a[A_BITS-1]}}, a };
		uwire [O_BITS-1:0]  bx = { {(O_BITS-B_BITS){B_SIGNED && b[B_BITS-1]}}, b };
		assign	sum[i*O_BITS +: O_BITS] = ax + bx;
	end : genLanes

	always_ff @(posedge clk) begin
		if(!rst_n)  OValid <= 0;
		else if(take)  OValid <= 1;
		else if(m_tready)  OValid <= 0;
	end
	always_ff @(posedge clk) begin
		if(take)  OData <= sum;
	end

	assign	m_tvalid = OValid;
	assign	m_tdata  = O_WIDTH'(OData);  // padding bits are zero

endmodule : densiflow_add_streams
