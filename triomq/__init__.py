"""triomq"""
