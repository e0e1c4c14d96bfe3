from conformance.golden import PATH, write

write()
print(f"wrote {PATH}")
