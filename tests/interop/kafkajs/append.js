#!/usr/bin/env node
// Append a contract history with kafkajs, as the billing engine (a NestJS service) does.
//
//   node append.js <bootstrap servers> <history.jsonl>
//
// Each line of the history is {"topic": ..., "key": ..., "value": <the envelope, a JSON object>}. The
// records are sent in that order with kafkajs's default producer and default partitioner (murmur2, Java
// compatible: no partition is ever given here), idempotent, acks all. The envelope goes on the wire as
// JSON.stringify writes it, as a TypeScript engine would.
//
// A broker that refuses kafkajs's InitProducerId (Tansu 0.6 answers kafkajs's v1 request, which has no
// producer id and epoch fields, with UNKNOWN_SERVER_ERROR) gets the same records from a producer that is not
// idempotent, still acks all; the output says so and why, and the caller decides whether that may be.
//
// Prints one JSON document on stdout: the kafkajs version, whether the producer was idempotent (and if not,
// what the broker said), and per record in history order its topic, key, partition and offset. kafkajs's own
// log goes to stderr. Exits 0 once every record is acknowledged, 1 on any error.
'use strict'

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')
const kafkajsVersion = require('kafkajs/package.json').version

function stderrLogger() {
  return ({ namespace, level, label, log }) => {
    const { message, ...extra } = log
    process.stderr.write(`kafkajs ${label} [${namespace}] ${message} ${JSON.stringify(extra)}\n`)
  }
}

function readHistory(path) {
  return fs.readFileSync(path, 'utf8')
    .split('\n')
    .filter(line => line.trim() !== '')
    .map((line, index) => {
      const record = JSON.parse(line)
      if (typeof record.topic !== 'string' || typeof record.key !== 'string' || record.value === undefined) {
        throw new Error(`history line ${index + 1}: needs a string topic, a string key and a value`)
      }
      return record
    })
}

async function main() {
  const [bootstrap, historyPath] = process.argv.slice(2)
  if (!bootstrap || !historyPath) {
    throw new Error('usage: node append.js <bootstrap servers> <history.jsonl>')
  }
  const history = readHistory(historyPath)
  const kafka = new Kafka({
    clientId: 'billing-engine-kafkajs-interop',
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    logCreator: stderrLogger,
    connectionTimeout: 5000,
    requestTimeout: 15000,
  })
  const { producer, idempotent, refused } = await connectProducer(kafka)
  const sent = []
  try {
    // One record per send, in history order: the reply names the partition and offset of exactly that record.
    for (const record of history) {
      const value = typeof record.value === 'string' ? record.value : JSON.stringify(record.value)
      const [meta] = await producer.send({
        topic: record.topic,
        acks: -1,
        messages: [{ key: record.key, value }],
      })
      sent.push({ topic: meta.topicName, key: record.key, partition: meta.partition, offset: Number(meta.baseOffset) })
    }
  } finally {
    await producer.disconnect()
  }
  process.stdout.write(JSON.stringify({ client: 'kafkajs', version: kafkajsVersion, idempotent, refused, records: sent }) + '\n')
}

// No createPartitioner: kafkajs's default (DefaultPartitioner, murmur2) is what this test is about.
async function connectProducer(kafka) {
  const options = { maxInFlightRequests: 1, allowAutoTopicCreation: false }
  const idempotentProducer = kafka.producer({ ...options, idempotent: true })
  try {
    await idempotentProducer.connect()
    return { producer: idempotentProducer, idempotent: true, refused: null }
  } catch (error) {
    await idempotentProducer.disconnect().catch(() => {})
    if (!refusedProducerId(error)) {
      throw error
    }
    const producer = kafka.producer(options)
    await producer.connect()
    return { producer, idempotent: false, refused: `InitProducerId: ${error.type}: ${error.message}` }
  }
}

function refusedProducerId(error) {
  // UNKNOWN_SERVER_ERROR (code -1, kafkajs's type UNKNOWN) in the InitProducerId response
  return Boolean(error) && error.name === 'KafkaJSProtocolError' && error.code === -1 &&
    /initProducerId/.test(String(error.stack))
}

main().then(
  () => process.exit(0),
  error => {
    process.stderr.write(`append.js: ${error && error.stack ? error.stack : error}\n`)
    process.exit(1)
  },
)
