// Starts dynalite's own command line (same flags) with one change: a client that resets its
// connection mid-request (a manager stopped or SIGKILLed while a DynamoDB call is in flight, which
// the tests do on purpose) must not take the server down. dynalite 4.0.0 leaves ECONNRESET/EPIPE on
// a request socket unhandled, and Node then exits.
'use strict'
process.on('uncaughtException', (err) => {
  if (err && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
    console.error('dynalite: client connection dropped (' + err.code + '), still serving')
    return
  }
  console.error(err)
  process.exit(1)
})
require('./node_modules/dynalite/cli.js')
