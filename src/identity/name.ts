import {
  AttributeTypeAndValue,
  AttributeValue,
  Name,
  RelativeDistinguishedName,
} from '@peculiar/asn1-x509'

/** id-at-commonName (X.520). */
export const COMMON_NAME_OID = '2.5.4.3'

/** Builds a distinguished name with a single CN attribute, written as a UTF8String. */
export function commonNameOnly(commonName: string): Name {
  const value = new AttributeValue({ utf8String: commonName })
  const rdn = new RelativeDistinguishedName([
    new AttributeTypeAndValue({ type: COMMON_NAME_OID, value }),
  ])
  return new Name([rdn])
}

/** Returns the first CN of a distinguished name, or undefined when it has none. */
export function readCommonName(name: Name): string | undefined {
  for (const rdn of name) {
    for (const attribute of rdn) {
      if (attribute.type === COMMON_NAME_OID) return attribute.value.toString()
    }
  }
  return undefined
}
