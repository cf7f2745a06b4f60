"""stepsmith.improve"""
