#!/usr/bin/env ruby
# frozen_string_literal: true

# Ask a running Verdict for lending decisions: one IsAuthorized call, then one BatchAuthorize
# whose third item fails on its own (an action the schema does not declare).
#
#   examples/ruby/generate.sh            # once, and after every change to proto/
#   ruby examples/ruby/client.rb HOST:PORT
#
# Prints one JSON object per line on stdout (stable keys, enum names as in the proto), the same
# lines as examples/node/client.js. Exits 1 when a call fails as a whole (unreachable server,
# deadline, refused caller), 2 on usage or missing stubs.
#
# Environment: VERDICT_TOKEN (optional) is sent as `authorization: Bearer <token>`;
# VERDICT_DEADLINE_SECONDS (default 2) bounds every call; VERDICT_RUBY_STUBS is the folder
# generate.sh wrote (default examples/ruby/gen).

require 'json'

stubs = ENV.fetch('VERDICT_RUBY_STUBS', File.join(__dir__, 'gen'))
unless File.exist?(File.join(stubs, 'verdict', 'v1', 'authorization_services_pb.rb'))
  warn "no generated stubs in #{stubs}: run examples/ruby/generate.sh first"
  exit 2
end
$LOAD_PATH.unshift(stubs)
require 'grpc'
require 'verdict/v1/authorization_services_pb'

CONTEXT = { mfa: true, now: '2025-03-04T10:00:00Z', source_ip: '10.20.0.5' }.freeze
SINGLE = ['Employee::olivia', 'Action::disburse', 'Loan::loan-1005'].freeze # officer, approved loan
BATCH = [
  ['Borrower::alice', 'Action::view', 'Loan::loan-1001'], # her own loan
  ['Employee::uma', 'Action::view', 'Loan::loan-2001'], # another partner's loan: forbidden
  ['Employee::olivia', 'Action::teleport', 'Loan::loan-1005'], # undeclared action: item error
  ['Borrower::bob', 'Action::view', 'Loan::loan-1001'] # not his loan: no permit
].freeze

# "Type::id" split at the last "::"; the id is taken verbatim (never Cedar-quoted by hand).
def uid(text)
  at = text.rindex('::')
  Verdict::V1::EntityUid.new(type: text[0...at], id: text[(at + 2)..])
end

def request(question)
  principal, action, resource = question
  Verdict::V1::IsAuthorizedRequest.new(
    principal: uid(principal), action: uid(action), resource: uid(resource),
    # Cedar JSON: lossless, unlike google.protobuf.Struct
    context_json: JSON.generate(CONTEXT)
  )
end

def code_name(code)
  GRPC::Core::StatusCodes.constants.find { |c| GRPC::Core::StatusCodes.const_get(c) == code }&.to_s || 'UNKNOWN'
end

def asked(call, index, question)
  { call: call, index: index, principal: question[0], action: question[1], resource: question[2] }
end

def decision_line(call, index, question, reply)
  asked(call, index, question).merge(
    decision: reply.decision.to_s, deny_kind: reply.deny_kind.to_s,
    determining_policies: reply.determining_policies.to_a, policy_version: reply.policy_version
  )
end

def error_line(call, index, question, status)
  asked(call, index, question).merge(
    error: { code: status.code, name: code_name(status.code), message: status.message }
  )
end

DEADLINE_SECONDS = Float(ENV.fetch('VERDICT_DEADLINE_SECONDS', '2'), exception: false)

def call_options
  options = { deadline: Time.now + DEADLINE_SECONDS }
  token = ENV.fetch('VERDICT_TOKEN', '')
  options[:metadata] = { 'authorization' => "Bearer #{token}" } unless token.empty?
  options
end

def batch_line(index, result)
  case result.outcome
  when :response then decision_line('BatchAuthorize', index, BATCH[index], result.response)
  when :error then error_line('BatchAuthorize', index, BATCH[index], result.error)
  else raise "batch result #{index} carries neither a decision nor an error"
  end
end

def main(target)
  stub = Verdict::V1::AuthorizationService::Stub.new(target, :this_channel_is_insecure)
  single = stub.is_authorized(request(SINGLE), **call_options)
  puts JSON.generate(decision_line('IsAuthorized', 0, SINGLE, single))
  batch = stub.batch_authorize(
    Verdict::V1::BatchAuthorizeRequest.new(requests: BATCH.map { |q| request(q) }), **call_options
  )
  batch.results.each_with_index { |result, index| puts JSON.generate(batch_line(index, result)) }
end

if ARGV.length != 1
  warn 'usage: ruby client.rb HOST:PORT'
  exit 2
end
unless DEADLINE_SECONDS&.positive?
  warn 'VERDICT_DEADLINE_SECONDS must be a number of seconds above 0'
  exit 2
end
$stdout.sync = true
begin
  main(ARGV[0])
rescue GRPC::BadStatus => e
  # A failed call: its status code name and details, never a backtrace.
  warn "verdict call failed: #{code_name(e.code)}: #{e.details}"
  exit 1
end
