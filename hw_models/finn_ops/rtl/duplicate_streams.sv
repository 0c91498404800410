// densiflow: fork of one AXI stream into N identical streams (the fork of a residual block).
//
// One word register and one pending bit per output. Output i offers the word while its bit is
// set and clears the bit on its own handshake, so consumers may accept in any order and in any
// cycle: no word is lost or repeated when only some are ready. The next input word is taken in
// the cycle the last pending copy leaves (s_tready depends combinationally on m_tready, never on
// s_tvalid; m_tvalid is a register), so the fork runs at one word per cycle with a latency of one
// cycle when every consumer is ready.
module densiflow_duplicate_streams #(
	int unsigned  N     = 2,  // output streams (>= 2)
	int unsigned  WIDTH = 8   // TDATA bits, the same on every stream
)(
	input	logic  clk,
	input	logic  rst_n,  // synchronous, active low

	input	logic [WIDTH-1:0]  s_tdata,
	input	logic  s_tvalid,
	output	logic  s_tready,

	output	logic [WIDTH-1:0]  m_tdata,  // shared by all outputs
	output	logic [N-1:0]  m_tvalid,
	input	logic [N-1:0]  m_tready
);
	logic [WIDTH-1:0]  Data;
	logic [N-1:0]  Pending;

	// every copy of the held word is gone by the end of this cycle
	assign	s_tready = &(~Pending | m_tready);

	always_ff @(posedge clk) begin
		if(!rst_n)  Pending <= '0;
		else if(s_tready)  Pending <= {N{s_tvalid}};
		else  Pending <= Pending & ~m_tready;
	end
	always_ff @(posedge clk) begin
		if(s_tready && s_tvalid)  Data <= s_tdata;
	end

	assign	m_tdata  = Data;
	assign	m_tvalid = Pending;

endmodule : densiflow_duplicate_streams
