// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

interface IUniswapV2Pair {
    function token0() external view returns (address);
    function token1() external view returns (address);
    function getReserves() external view returns (uint112, uint112, uint32);
    function swap(uint256 amount0Out, uint256 amount1Out, address to, bytes calldata data) external;
}

interface IERC20 {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// Bandit's router: the market's single swaps and the arbitrage's two legs, each one
/// transaction. Outputs are the pair's own getAmountOut on the reserves at execution time,
/// so a swap can never fail the pair's `UniswapV2: K` check.
contract BanditArb {
    /// The cycle returned less than the caller's floor: nothing happened (the whole
    /// transaction reverts, both legs with it).
    error Unprofitable(uint256 amountOut, uint256 minAmountOut);

    function swapExactIn(address pair, address tokenIn, uint256 amountIn)
        external
        returns (uint256 amountOut)
    {
        require(IERC20(tokenIn).transferFrom(msg.sender, pair, amountIn), "transferFrom");
        amountOut = _leg(pair, tokenIn, amountIn, msg.sender);
    }

    /// tokenIn into buyPair, the other token straight on to sellPair, tokenIn back to the
    /// caller; reverts unless at least minAmountOut came back.
    function arbitrage(
        address buyPair,
        address sellPair,
        address tokenIn,
        uint256 amountIn,
        uint256 minAmountOut
    ) external returns (uint256 amountOut) {
        require(IERC20(tokenIn).transferFrom(msg.sender, buyPair, amountIn), "transferFrom");
        address token0 = IUniswapV2Pair(buyPair).token0();
        address tokenMid = token0 == tokenIn ? IUniswapV2Pair(buyPair).token1() : token0;
        // The middle token goes straight from one pair to the other: one transfer less.
        uint256 mid = _leg(buyPair, tokenIn, amountIn, sellPair);
        amountOut = _leg(sellPair, tokenMid, mid, msg.sender);
        if (amountOut < minAmountOut) revert Unprofitable(amountOut, minAmountOut);
    }

    function _leg(address pair, address tokenIn, uint256 amountIn, address to)
        private
        returns (uint256 amountOut)
    {
        (uint112 r0, uint112 r1,) = IUniswapV2Pair(pair).getReserves();
        bool zeroIn = IUniswapV2Pair(pair).token0() == tokenIn;
        (uint256 rIn, uint256 rOut) = zeroIn ? (uint256(r0), uint256(r1)) : (uint256(r1), uint256(r0));
        uint256 withFee = amountIn * 997;
        amountOut = withFee * rOut / (rIn * 1000 + withFee);
        IUniswapV2Pair(pair).swap(zeroIn ? 0 : amountOut, zeroIn ? amountOut : 0, to, "");
    }
}
