#!/usr/bin/env node
// Ask a running Verdict for lending decisions: one IsAuthorized call, then one BatchAuthorize
// whose third item fails on its own (an action the schema does not declare).
//
//   node client.js HOST:PORT
//
// Prints one JSON object per line on stdout (stable keys, enum names as in the proto):
//   {"call":"IsAuthorized","index":0,"principal":...,"decision":"DECISION_ALLOW",...}
//   {"call":"BatchAuthorize","index":2,...,"error":{"code":3,"name":"INVALID_ARGUMENT",...}}
// Exits 1 when a call fails as a whole (unreachable server, deadline, refused caller), 2 on usage.
//
// Environment: VERDICT_TOKEN (optional) is sent as `authorization: Bearer <token>`;
// VERDICT_DEADLINE_SECONDS (default 2) bounds every call.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The wire contract is read from the repository's proto/ at run time, so the client never
// drifts from it; google/rpc/status.proto comes from vendor/proto (the contract gate's copy).
const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const THIRD_PARTY = path.resolve(__dirname, '..', '..', 'vendor', 'proto');

const CONTEXT = { mfa: true, now: '2025-03-04T10:00:00Z', source_ip: '10.20.0.5' };
const SINGLE = ['Employee::olivia', 'Action::disburse', 'Loan::loan-1005']; // officer, approved loan
const BATCH = [
  ['Borrower::alice', 'Action::view', 'Loan::loan-1001'], // her own loan
  ['Employee::uma', 'Action::view', 'Loan::loan-2001'], // another partner's loan: forbidden
  ['Employee::olivia', 'Action::teleport', 'Loan::loan-1005'], // undeclared action: item error
  ['Borrower::bob', 'Action::view', 'Loan::loan-1001'], // not his loan: no permit
];

function loadService() {
  const definition = protoLoader.loadSync('verdict/v1/authorization.proto', {
    includeDirs: [PROTO_ROOT, THIRD_PARTY],
    keepCase: true, // field names exactly as in the proto (determining_policies, ...)
    enums: String, // enum values as their names (DECISION_ALLOW)
    longs: String, // uint64 entity_version without precision loss
    defaults: true,
    oneofs: true, // BatchAuthorizeResult.outcome names the field that is set
  });
  return grpc.loadPackageDefinition(definition).verdict.v1.AuthorizationService;
}

// "Type::id" split at the last "::"; the id is taken verbatim (never Cedar-quoted by hand).
function uid(text) {
  const at = text.lastIndexOf('::');
  return { type: text.slice(0, at), id: text.slice(at + 2) };
}

function request([principal, action, resource]) {
  return {
    principal: uid(principal),
    action: uid(action),
    resource: uid(resource),
    context_json: JSON.stringify(CONTEXT), // Cedar JSON: lossless, unlike google.protobuf.Struct
  };
}

function decisionLine(call, index, question, reply) {
  return {
    call,
    index,
    principal: question[0],
    action: question[1],
    resource: question[2],
    decision: reply.decision,
    deny_kind: reply.deny_kind,
    determining_policies: reply.determining_policies,
    policy_version: reply.policy_version,
  };
}

function errorLine(call, index, question, status) {
  const name = Object.keys(grpc.status).find((key) => grpc.status[key] === status.code);
  return {
    call,
    index,
    principal: question[0],
    action: question[1],
    resource: question[2],
    error: { code: status.code, name: name || 'UNKNOWN', message: status.message },
  };
}

const DEADLINE_SECONDS = Number(process.env.VERDICT_DEADLINE_SECONDS || '2');

function callOptions() {
  return { deadline: new Date(Date.now() + DEADLINE_SECONDS * 1000) };
}

function metadata() {
  const meta = new grpc.Metadata();
  const token = process.env.VERDICT_TOKEN;
  if (token) {
    meta.set('authorization', `Bearer ${token}`);
  }
  return meta;
}

function unary(client, method, message) {
  return new Promise((resolve, reject) => {
    client[method](message, metadata(), callOptions(), (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

async function main(target) {
  const Service = loadService();
  const client = new Service(target, grpc.credentials.createInsecure());
  try {
    const single = await unary(client, 'IsAuthorized', request(SINGLE));
    console.log(JSON.stringify(decisionLine('IsAuthorized', 0, SINGLE, single)));

    const batch = await unary(client, 'BatchAuthorize', { requests: BATCH.map(request) });
    batch.results.forEach((result, index) => {
      let line;
      if (result.outcome === 'response') {
        line = decisionLine('BatchAuthorize', index, BATCH[index], result.response);
      } else if (result.outcome === 'error') {
        line = errorLine('BatchAuthorize', index, BATCH[index], result.error);
      } else {
        throw new Error(`batch result ${index} carries neither a decision nor an error`);
      }
      console.log(JSON.stringify(line));
    });
  } finally {
    client.close();
  }
}

if (process.argv.length !== 3) {
  console.error('usage: node client.js HOST:PORT');
  process.exit(2);
}
if (!(DEADLINE_SECONDS > 0)) {
  console.error('VERDICT_DEADLINE_SECONDS must be a number of seconds above 0');
  process.exit(2);
}
main(process.argv[2]).catch((error) => {
  // A failed call: its status code name and details, never a stack trace.
  const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code);
  console.error(`verdict call failed: ${name || 'ERROR'}: ${error.details || error.message}`);
  process.exitCode = 1;
});
