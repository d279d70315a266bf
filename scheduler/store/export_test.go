package store

// Schema1 is the first migration, for tests of upgrades from it.
var Schema1 = migrations[0]
