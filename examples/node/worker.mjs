// A worker written with the official npm iii-sdk, unchanged but for the URL.
//   cd examples/node && npm install && III_URL=ws://127.0.0.1:49134 node worker.mjs
import { registerWorker } from 'iii-sdk'

const iii = registerWorker(process.env.III_URL ?? 'ws://127.0.0.1:49134')

iii.registerFunction('node::greet', async (input) => {
  return { message: `Hello, ${input.name}!`, runtime: 'node' }
})

// Call a function served by a Python worker, through the same daemon.
if (process.env.CALL_FUNCTION) {
  const result = await iii.trigger({
    function_id: process.env.CALL_FUNCTION,
    payload: JSON.parse(process.env.CALL_PAYLOAD ?? '{}'),
  })
  console.log(`result ${JSON.stringify(result)}`)
}
console.log('ready')

process.on('SIGTERM', async () => {
  await iii.shutdown?.()
  process.exit(0)
})
