// densiflow: global accumulation pooling (FINN's GlobalAccPool): per channel, the sum over all
// PIX pixels of a frame.
//
// The input carries per pixel CF = NumChannels/PE channel folds of PE lanes: (PIX, CF, PE). The
// running sums of all CF folds live in a CF-entry memory of PE x ACC_BITS (two's complement if
// SIGNED). While the frame's last pixel streams in, each fold's final sum leaves as one output
// word, so the CF output words overlap the last CF input words and the next frame can follow
// at once. Lane i is bits [i*W +: W] of a word; padding bits of the output are 0.
//
// One input word per cycle; the output word is registered (1 cycle latency). The input is refused
// only in a cycle of the last pixel while the previous output word is still not taken.
module densiflow_global_acc_pool #(
	int unsigned  PE,
	int unsigned  CF,        // channel folds (NumChannels / PE)
	int unsigned  PIX,       // pixels per frame
	int unsigned  IN_BITS,
	int unsigned  ACC_BITS,  // = output element width
	bit           SIGNED,
	int unsigned  IN_STREAM_BITS = (PE*IN_BITS + 7)/8*8,
	int unsigned  OUT_STREAM_BITS = (PE*ACC_BITS + 7)/8*8
)(
	input	logic  clk,
	input	logic  rst_n,

	input	logic [IN_STREAM_BITS-1:0]  s_tdata,
	input	logic  s_tvalid,
	output	logic  s_tready,

	output	logic [OUT_STREAM_BITS-1:0]  m_tdata,
	output	logic  m_tvalid,
	input	logic  m_tready
);
	localparam int unsigned  FW = CF > 1? $clog2(CF) : 1;
	localparam int unsigned  PW = PIX > 1? $clog2(PIX) : 1;

	logic [FW-1:0]  fold;  // channel fold of the next input word
	logic [PW-1:0]  pix;   // pixel of the next input word
	logic [PE-1:0][ACC_BITS-1:0]  mem[CF];
	logic [PE-1:0][ACC_BITS-1:0]  res;
	logic  ovld;

	wire  last_fold = fold == FW'(CF-1);
	wire  last_pix = pix == PW'(PIX-1);
	wire  take = s_tvalid && s_tready;
	assign  s_tready = !(last_pix && ovld && !m_tready);

	// running sums after the current input word
	logic [PE-1:0][ACC_BITS-1:0]  sum;
	always_comb begin
		for(int unsigned  i = 0; i < PE; i++) begin
			automatic logic [IN_BITS-1:0]  x = s_tdata[i*IN_BITS +: IN_BITS];
			automatic logic [ACC_BITS-1:0]  xe = ACC_BITS'({{ACC_BITS{SIGNED && x[IN_BITS-1]}}, x});
			sum[i] = pix == 0? xe : mem[fold][i] + xe;
		end
	end

	always_ff @(posedge clk) begin
		if(take && !last_pix)  mem[fold] <= sum;
	end

	always_ff @(posedge clk) begin
		if(!rst_n) begin
			fold <= '0;
			pix <= '0;
			ovld <= 0;
		end
		else begin
			if(m_tready)  ovld <= 0;
			if(take) begin
				fold <= last_fold? '0 : fold + 1;
				if(last_fold)  pix <= last_pix? '0 : pix + 1;
				if(last_pix) begin
					res <= sum;
					ovld <= 1;
				end
			end
		end
	end

	assign  m_tvalid = ovld;
	assign  m_tdata = OUT_STREAM_BITS'(res);

endmodule : densiflow_global_acc_pool
