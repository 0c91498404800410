// densiflow: pooling over the depthwise sliding-window stream of FINN's ConvolutionInputGenerator.
//
// Per output pixel the input carries CF = Channels/PE channel folds, each as K consecutive words
// (the window, one element per lane and word): (OFM_H, OFM_W, CF, K, PE). Every K input words give
// one output word of PE lanes. IS_MAX: the window's maximum. Otherwise the window's sum in ACC_BITS
// (two's complement if SIGNED), arithmetically shifted right by SHIFT (FINN's QuantAvgPool; 0 for
// AccPool). Lane i is bits [i*W +: W] of a word; padding bits of the output are 0.
//
// One input word per cycle; the output word is registered (1 cycle latency). The input is refused
// only in the cycle that completes a window while the previous output word is still not taken.
module densiflow_pool #(
	int unsigned  PE,
	int unsigned  K,         // window elements (product of FINN's KernelSize)
	int unsigned  IN_BITS,
	int unsigned  OUT_BITS,
	int unsigned  ACC_BITS,  // sum width (ignored by IS_MAX)
	bit           SIGNED,
	bit           IS_MAX,
	int unsigned  SHIFT,
	int unsigned  IN_STREAM_BITS = (PE*IN_BITS + 7)/8*8,
	int unsigned  OUT_STREAM_BITS = (PE*OUT_BITS + 7)/8*8
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
	localparam int unsigned  AW = IS_MAX? IN_BITS : ACC_BITS;  // running value per lane
	localparam int unsigned  CW = K > 1? $clog2(K) : 1;

	logic [CW-1:0]  cnt;  // window element of the next input word
	logic [PE-1:0][AW-1:0]  acc;
	logic [PE-1:0][OUT_BITS-1:0]  res;
	logic  ovld;

	wire  last = cnt == CW'(K-1);
	wire  take = s_tvalid && s_tready;
	assign  s_tready = !(last && ovld && !m_tready);

	// running value after the current input word, per lane
	logic [PE-1:0][AW-1:0]  nxt;
	logic [PE-1:0][OUT_BITS-1:0]  out;
	always_comb begin
		for(int unsigned  i = 0; i < PE; i++) begin
			automatic logic [IN_BITS-1:0]  x = s_tdata[i*IN_BITS +: IN_BITS];
			automatic logic [AW-1:0]  xe = AW'({{AW{SIGNED && x[IN_BITS-1]}}, x});
			automatic logic [AW:0]  sx = {SIGNED && xe[AW-1], xe};
			automatic logic [AW:0]  sa = {SIGNED && acc[i][AW-1], acc[i]};
			automatic logic  sgn;
			/* verilator lint_off UNUSEDSIGNAL */
			automatic logic signed [AW+OUT_BITS:0]  sh;  // the low OUT_BITS are the result
			/* verilator lint_on UNUSEDSIGNAL */
			if(cnt == 0)  nxt[i] = xe;
			else if(IS_MAX)  nxt[i] = $signed(sx) > $signed(sa)? xe : acc[i];
			else  nxt[i] = acc[i] + xe;
			sgn = SIGNED && nxt[i][AW-1];
			sh = $signed({{(OUT_BITS+1){sgn}}, nxt[i]}) >>> SHIFT;
			out[i] = sh[OUT_BITS-1:0];
		end
	end

	always_ff @(posedge clk) begin
		if(!rst_n) begin
			cnt <= '0;
			ovld <= 0;
		end
		else begin
			if(m_tready)  ovld <= 0;
			if(take) begin
				acc <= nxt;
				cnt <= last? '0 : cnt + 1;
				if(last) begin
					res <= out;
					ovld <= 1;
				end
			end
		end
	end

	assign  m_tvalid = ovld;
	assign  m_tdata = OUT_STREAM_BITS'(res);

endmodule : densiflow_pool
