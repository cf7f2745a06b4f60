"""stepsmith.benchmarks"""
