// Depth-limited FIFO for FIFO sizing by simulation (hw_models.rtlsim.fifo_sizing).
//
// finn-rtllib's fifo_gauge (the unbounded queue FINN itself sizes FIFOs with) behind an input
// gate: it accepts a word only while it holds fewer than `limit` words (0: unbounded), so one
// build measures any capacity, set at run time. `maxcount` is the highest occupancy since reset.
module rtlsim_fifo_gauge_limit #(
	int unsigned  WIDTH
)(
	input	logic  ap_clk,
	input	logic  ap_rst_n,
	input	logic [31:0]  limit,

	input	logic [WIDTH-1:0]  in0_V_TDATA,
	input	logic  in0_V_TVALID,
	output	logic  in0_V_TREADY,

	output	logic [WIDTH-1:0]  out0_V_TDATA,
	output	logic  out0_V_TVALID,
	input	logic  out0_V_TREADY,

	output	logic [31:0]  maxcount
);
	uwire [31:0]  count;
	uwire  room = (limit == 0) || (count < limit);
	assign	in0_V_TREADY = room;

	fifo_gauge #(.WIDTH(WIDTH)) gauge (
		.clk(ap_clk), .rst(!ap_rst_n),
		.idat(in0_V_TDATA), .ivld(in0_V_TVALID && room), .irdy(),
		.odat(out0_V_TDATA), .ovld(out0_V_TVALID), .ordy(out0_V_TREADY),
		.count(count), .maxcount(maxcount)
	);
endmodule : rtlsim_fifo_gauge_limit
