"""stepsmith.verify"""
