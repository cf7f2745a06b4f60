"""stepsmith.llm"""
