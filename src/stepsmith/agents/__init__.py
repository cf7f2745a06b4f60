"""stepsmith.agents"""
