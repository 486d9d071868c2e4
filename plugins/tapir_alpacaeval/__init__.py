"""AlpacaEval 2.0: win rate against reference outputs, and the LC win rate."""
